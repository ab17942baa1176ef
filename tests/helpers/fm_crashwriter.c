/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fm_crashwriter: a writer whose durability promises can be checked after a
 * crash (kill -9 of the daemon under it, or of itself), and the checker.
 *
 *   fm_crashwriter write IMAGE JOURNAL --seed N --blocks B [--block-size 4096]
 *                  [--offset BYTES] [--fsync-every K] [--duration S]
 *   fm_crashwriter verify IMAGE JOURNAL [--max-report N]
 *   fm_crashwriter regions JOURNAL --region-size BYTES [--all]
 *
 * write: opens IMAGE O_RDWR|O_DIRECT and writes random blocks among the B
 * blocks starting at --offset, one synchronous pwrite() at a time; every K
 * writes it fsync()s IMAGE and then appends to JOURNAL one line listing the
 * (block, generation) pairs that fsync acknowledged, and fsync()s JOURNAL.
 * It runs until killed, until --duration seconds have passed (then it
 * acknowledges what is pending and exits 0), or until an I/O error (exit 1:
 * expected when the daemon under IMAGE is killed).  Keep JOURNAL on another
 * file system than IMAGE.
 *
 * Every block is self-describing:
 *     0  u64 magic "FMCRASH1"     8  u64 block (image offset / block size)
 *    16  u64 generation           24 u64 seed of the run that wrote it
 *    32  payload: a pseudo-random stream derived from (seed, block, generation)
 *  bs-8  u64 hash of bytes [0, bs - 8)
 * A generation is (run << 32) | n: n counts the writes of that block in the
 * run, and run is the number of runs already in the journal plus one, so
 * generations keep growing when several runs share an image and a journal.
 *
 * The journal is text, one record per line, each line ending with
 * " *<16 hex digits>", a hash of what precedes it:
 *     R <run> <seed> <offset> <blocks> <block size>      a run starts
 *     A <run> <seq> <n> <block>:<gen hex> ...            fsync <seq> acknowledged these
 *     E <run> <writes> <fsyncs>                          the run ended (--duration)
 * A line is written with one write(); the writer is killed at any moment,
 * so the last line may be torn (no newline): verify ignores such a tail, and
 * the next run cuts it off before appending.  A complete line with a bad
 * hash is damage, reported as such.
 *
 * verify: reads every block of every run's range (large O_DIRECT reads) and
 * checks: a block that was acknowledged holds a valid block (magic, block
 * number, hash, the payload its header implies, the seed of its run) with a
 * generation >= the last acknowledged one (a later, unacknowledged
 * generation is allowed); a block never acknowledged is all zero or valid.
 * It prints a summary and the first violations; exit 0 when there are
 * none, 1 when there are (or the journal is damaged or empty), 2 on usage.
 *
 * regions: the distinct REGION-SIZE regions (image offset / region size)
 * holding blocks acknowledged in the last run (all runs with --all), one a
 * line, ascending.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CW_MAGIC 0x3148534152434d46ull /* "FMCRASH1" little-endian */
#define CW_HDR 32u
#define CW_MAX_RUNS 100000u
#define CW_READ_CHUNK (1u << 20)

/*----------------------------------------------------------------*/
/* hashing and the payload stream */

static uint64_t fmix64(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ull;
	k ^= k >> 33;
	return k;
}

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A 64-bit hash of @len bytes (FNV-1a over bytes, then an avalanche). */
static uint64_t hash64(const void *p, size_t len)
{
	const unsigned char *b = p;
	uint64_t h = 0xcbf29ce484222325ull ^ len;

	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return fmix64(h);
}

/* Hash of a block: whole u64 words (the block size is a multiple of 8). */
static uint64_t block_hash(const unsigned char *blk, size_t bs)
{
	uint64_t h = 0x84222325cbf29ce4ull ^ bs, w;

	for (size_t i = 0; i + 8 <= bs - 8; i += 8) {
		memcpy(&w, blk + i, 8);
		h = (h ^ w) * 0x100000001b3ull;
		h ^= h >> 29;
	}
	return fmix64(h);
}

static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint64_t get64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

static void fill_payload(unsigned char *blk, size_t bs, uint64_t seed, uint64_t block,
			 uint64_t gen)
{
	uint64_t s = fmix64(seed) ^ fmix64(block + 0x51ull) ^ (fmix64(gen) * 3);

	for (size_t i = CW_HDR; i + 8 <= bs - 8; i += 8)
		put64(blk + i, splitmix64(&s));
}

static void make_block(unsigned char *blk, size_t bs, uint64_t seed, uint64_t block,
		       uint64_t gen)
{
	put64(blk, CW_MAGIC);
	put64(blk + 8, block);
	put64(blk + 16, gen);
	put64(blk + 24, seed);
	fill_payload(blk, bs, seed, block, gen);
	put64(blk + bs - 8, block_hash(blk, bs));
}

/*----------------------------------------------------------------*/
/* small utilities */

static const char *prog = "fm_crashwriter";

static void msg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void *xmalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);

	if (!p) {
		msg("out of memory (%zu bytes)", n);
		exit(1);
	}
	return p;
}

static void *xaligned(size_t n)
{
	void *p = NULL;

	if (posix_memalign(&p, 4096, n)) {
		msg("out of memory (%zu bytes)", n);
		exit(1);
	}
	memset(p, 0, n);
	return p;
}

/* A number with an optional binary suffix (k, M, G). */
static bool parse_u64(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *s == '-')
		return false;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end)
		return false;
	*ret = v;
	return true;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*----------------------------------------------------------------*/
/* the journal */

struct run {
	uint64_t run, seed, offset, blocks, bs;
};

struct ack {
	uint64_t block, gen;
};

struct journal {
	struct run *runs;
	size_t nr_runs;
	struct ack *acks;       /* in journal order */
	size_t nr_acks, cap_acks;
	size_t nr_lines, torn_bytes;
	uint64_t last_run_of_acks_start; /* index into acks where the last run's acks start */
};

/* Appends " *<hash>\n" to @line (which has room) and returns its length. */
static size_t seal_line(char *line, size_t len)
{
	return len + (size_t)sprintf(line + len, " *%016" PRIx64 "\n", hash64(line, len));
}

static void journal_free(struct journal *j)
{
	free(j->runs);
	free(j->acks);
	memset(j, 0, sizeof(*j));
}

static void add_ack(struct journal *j, uint64_t block, uint64_t gen)
{
	if (j->nr_acks == j->cap_acks) {
		j->cap_acks = j->cap_acks ? 2 * j->cap_acks : 1024;
		j->acks = realloc(j->acks, j->cap_acks * sizeof(*j->acks));
		if (!j->acks) {
			msg("out of memory");
			exit(1);
		}
	}
	j->acks[j->nr_acks++] = (struct ack){ block, gen };
}

static const struct run *find_run(const struct journal *j, uint64_t run)
{
	/* Runs are numbered 1, 2, ... in journal order. */
	if (run == 0 || run > j->nr_runs)
		return NULL;
	return &j->runs[run - 1];
}

/* Parse one complete line (without its newline).  Returns false with a
 * message on damage. */
static bool parse_line(struct journal *j, char *line, size_t lineno, const char *path)
{
	char *star = strrchr(line, '*');
	uint64_t want, got;
	char *tok, *save = NULL;

	if (!star || star == line || star[-1] != ' ' || strlen(star + 1) != 16) {
		msg("journal %s: line %zu is damaged (no hash)", path, lineno);
		return false;
	}
	want = strtoull(star + 1, NULL, 16);
	got = hash64(line, (size_t)(star - 1 - line));
	if (want != got) {
		msg("journal %s: line %zu is damaged (hash mismatch)", path, lineno);
		return false;
	}
	star[-1] = '\0';
	tok = strtok_r(line, " ", &save);
	if (!tok)
		goto bad;
	if (!strcmp(tok, "R")) {
		struct run r;

		if (sscanf(save, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64,
			   &r.run, &r.seed, &r.offset, &r.blocks, &r.bs) != 5)
			goto bad;
		if (r.run != j->nr_runs + 1 || j->nr_runs >= CW_MAX_RUNS) {
			msg("journal %s: line %zu: run %" PRIu64 " out of sequence", path, lineno,
			    r.run);
			return false;
		}
		j->runs = realloc(j->runs, (j->nr_runs + 1) * sizeof(*j->runs));
		if (!j->runs) {
			msg("out of memory");
			exit(1);
		}
		j->runs[j->nr_runs++] = r;
		j->last_run_of_acks_start = j->nr_acks;
	} else if (!strcmp(tok, "A")) {
		uint64_t run, seq, n, blk, gen;
		const struct run *r;

		if (!(tok = strtok_r(NULL, " ", &save)) || !parse_u64(tok, &run) ||
		    !(tok = strtok_r(NULL, " ", &save)) || !parse_u64(tok, &seq) ||
		    !(tok = strtok_r(NULL, " ", &save)) || !parse_u64(tok, &n))
			goto bad;
		r = find_run(j, run);
		if (!r || run != j->nr_runs)
			goto bad;
		for (uint64_t i = 0; i < n; i++) {
			if (!(tok = strtok_r(NULL, " ", &save)) ||
			    sscanf(tok, "%" SCNu64 ":%" SCNx64, &blk, &gen) != 2)
				goto bad;
			if (blk < r->offset / r->bs || blk >= r->offset / r->bs + r->blocks ||
			    gen >> 32 != run)
				goto bad;
			add_ack(j, blk, gen);
		}
		if (strtok_r(NULL, " ", &save))
			goto bad;
	} else if (!strcmp(tok, "E")) {
		/* informational */
	} else {
		goto bad;
	}
	return true;
bad:
	msg("journal %s: line %zu is malformed", path, lineno);
	return false;
}

/* Read and parse @path.  A missing or empty file is an empty journal when
 * @may_be_missing.  Sets *ret_valid_len to the length up to the last
 * complete line. */
static bool journal_load(const char *path, bool may_be_missing, struct journal *j,
			 off_t *ret_valid_len)
{
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0, lineno = 0;
	ssize_t n;
	off_t valid = 0;
	bool ok = true;

	memset(j, 0, sizeof(*j));
	if (!f) {
		if (errno == ENOENT && may_be_missing) {
			*ret_valid_len = 0;
			return true;
		}
		msg("journal %s: %s", path, strerror(errno));
		return false;
	}
	while ((n = getline(&line, &cap, f)) > 0) {
		lineno++;
		if (line[n - 1] != '\n') {
			/* A torn tail: the writer was killed inside write(). */
			j->torn_bytes = (size_t)n;
			break;
		}
		line[n - 1] = '\0';
		if (!parse_line(j, line, lineno, path)) {
			ok = false;
			break;
		}
		valid += n;
		j->nr_lines++;
	}
	free(line);
	fclose(f);
	*ret_valid_len = valid;
	return ok;
}

/* Append @len bytes in one write() and make them durable. */
static int journal_append(int fd, const char *buf, size_t len)
{
	ssize_t n = write(fd, buf, len);

	if (n < 0)
		return -errno;
	if ((size_t)n != len)
		return -EIO;
	if (fsync(fd) < 0)
		return -errno;
	return 0;
}

/*----------------------------------------------------------------*/
/* write */

static int cmd_write(int argc, char **argv)
{
	uint64_t seed = 0, blocks = 0, bs = 4096, offset = 0, every = 16, duration = 0;
	bool have_seed = false;
	const char *image, *jpath;
	struct journal j;
	off_t valid;
	int fd, jfd, r;
	uint32_t *cnt;
	struct ack *pending;
	size_t npending = 0, cap_line;
	char *line;
	unsigned char *buf;
	uint64_t run, rng, writes = 0, fsyncs = 0, first_block;
	double deadline = 0;

	if (argc < 3) {
		msg("write: IMAGE and JOURNAL are required");
		return 2;
	}
	image = argv[1];
	jpath = argv[2];
	for (int i = 3; i < argc; i++) {
		uint64_t *dst = NULL;

		if (!strcmp(argv[i], "--seed")) {
			dst = &seed;
			have_seed = true;
		} else if (!strcmp(argv[i], "--blocks")) {
			dst = &blocks;
		} else if (!strcmp(argv[i], "--block-size")) {
			dst = &bs;
		} else if (!strcmp(argv[i], "--offset")) {
			dst = &offset;
		} else if (!strcmp(argv[i], "--fsync-every")) {
			dst = &every;
		} else if (!strcmp(argv[i], "--duration")) {
			dst = &duration;
		} else {
			msg("write: unknown option %s", argv[i]);
			return 2;
		}
		if (i + 1 >= argc || !parse_u64(argv[i + 1], dst)) {
			msg("write: %s needs a number", argv[i]);
			return 2;
		}
		i++;
	}
	if (!have_seed || blocks == 0 || blocks > (1ull << 30)) {
		msg("write: --seed and --blocks (1 .. 2^30) are required");
		return 2;
	}
	if (bs < 512 || bs > (1u << 20) || bs % 512 || offset % bs || every == 0 ||
	    every > 100000) {
		msg("write: --block-size must be a multiple of 512 up to 1M, --offset a "
		    "multiple of it, --fsync-every 1 .. 100000");
		return 2;
	}

	/* The journal: cut a torn tail, then announce the run. */
	if (!journal_load(jpath, true, &j, &valid))
		return 1;
	run = j.nr_runs + 1;
	for (size_t i = 0; i < j.nr_runs; i++) {
		if (j.runs[i].bs != bs) {
			msg("write: journal %s has runs with block size %" PRIu64 ", not %" PRIu64,
			    jpath, j.runs[i].bs, bs);
			return 2;
		}
	}
	journal_free(&j);
	if (run >= CW_MAX_RUNS) {
		msg("write: journal %s has too many runs", jpath);
		return 1;
	}
	jfd = open(jpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (jfd < 0) {
		msg("write: journal %s: %s", jpath, strerror(errno));
		return 1;
	}
	if (ftruncate(jfd, valid) < 0) {
		msg("write: journal %s: cannot cut its torn tail: %s", jpath, strerror(errno));
		return 1;
	}

	fd = open(image, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (fd < 0) {
		msg("write: %s: %s", image, strerror(errno));
		return 1;
	}

	cap_line = 128 + (size_t)every * 40;
	line = xmalloc(cap_line);
	r = journal_append(jfd, line,
			   seal_line(line, (size_t)sprintf(line, "R %" PRIu64 " %" PRIu64 " %" PRIu64
							   " %" PRIu64 " %" PRIu64,
							   run, seed, offset, blocks, bs)));
	if (r < 0) {
		msg("write: journal %s: %s", jpath, strerror(-r));
		return 1;
	}

	cnt = xmalloc(blocks * sizeof(*cnt));
	pending = xmalloc(every * sizeof(*pending));
	buf = xaligned(bs);
	rng = fmix64(seed) ^ fmix64(run);
	first_block = offset / bs;
	if (duration)
		deadline = now_s() + (double)duration;

	for (;;) {
		bool stop = duration && now_s() >= deadline;

		if (!stop) {
			uint64_t i = splitmix64(&rng) % blocks, blk = first_block + i, gen;
			ssize_t n;

			gen = (run << 32) | ++cnt[i];
			make_block(buf, bs, seed, blk, gen);
			n = pwrite(fd, buf, bs, (off_t)(blk * bs));
			if (n != (ssize_t)bs) {
				msg("write: %s: block %" PRIu64 ": %s; stopped after %" PRIu64
				    " writes, %" PRIu64 " fsyncs acknowledged", image, blk,
				    n < 0 ? strerror(errno) : "short write", writes, fsyncs);
				return 1;
			}
			writes++;
			pending[npending++] = (struct ack){ blk, gen };
		}
		if (npending == every || (stop && npending)) {
			size_t len;

			if (fsync(fd) < 0) {
				msg("write: fsync %s: %s; stopped after %" PRIu64 " writes, %" PRIu64
				    " fsyncs acknowledged", image, strerror(errno), writes, fsyncs);
				return 1;
			}
			fsyncs++;
			len = (size_t)sprintf(line, "A %" PRIu64 " %" PRIu64 " %zu", run, fsyncs,
					      npending);
			for (size_t k = 0; k < npending; k++)
				len += (size_t)sprintf(line + len, " %" PRIu64 ":%" PRIx64,
						       pending[k].block, pending[k].gen);
			r = journal_append(jfd, line, seal_line(line, len));
			if (r < 0) {
				msg("write: journal %s: %s", jpath, strerror(-r));
				return 1;
			}
			npending = 0;
		}
		if (stop)
			break;
	}
	r = journal_append(jfd, line,
			   seal_line(line, (size_t)sprintf(line, "E %" PRIu64 " %" PRIu64 " %" PRIu64,
							   run, writes, fsyncs)));
	if (r < 0) {
		msg("write: journal %s: %s", jpath, strerror(-r));
		return 1;
	}
	printf("%s: run %" PRIu64 ": %" PRIu64 " writes, %" PRIu64 " fsyncs acknowledged\n",
	       prog, run, writes, fsyncs);
	close(fd);
	close(jfd);
	free(buf);
	free(pending);
	free(cnt);
	free(line);
	return 0;
}

/*----------------------------------------------------------------*/
/* verify */

static bool is_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

struct vstate {
	uint64_t checked, acked, zero, valid_unacked, newer, violations;
	uint64_t max_report;
};

static void violation(struct vstate *v, const char *fmt, ...)
{
	va_list ap;

	if (v->violations++ >= v->max_report)
		return;
	fputs("  violation: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
}

/* Check the block read for image block @blk against its last acknowledged
 * generation @acked (0: never acknowledged). */
static void check_block(const struct journal *j, struct vstate *v, const unsigned char *p,
			uint64_t bs, uint64_t blk, uint64_t acked, unsigned char *scratch)
{
	uint64_t b, gen, seed;
	const struct run *r;

	v->checked++;
	v->acked += acked != 0;
	if (is_zero(p, bs)) {
		if (acked)
			violation(v, "block %" PRIu64 ": all zero, but generation %#" PRIx64
				  " was acknowledged", blk, acked);
		else
			v->zero++;
		return;
	}
	if (get64(p) != CW_MAGIC) {
		violation(v, "block %" PRIu64 ": garbage (no header; first bytes %016" PRIx64 ")%s",
			  blk, get64(p), acked ? ", and a generation was acknowledged" : "");
		return;
	}
	b = get64(p + 8);
	gen = get64(p + 16);
	seed = get64(p + 24);
	if (get64(p + bs - 8) != block_hash(p, bs)) {
		violation(v, "block %" PRIu64 ": bad checksum (torn or damaged; header: block %"
			  PRIu64 " generation %#" PRIx64 ")", blk, b, gen);
		return;
	}
	if (b != blk) {
		violation(v, "block %" PRIu64 ": holds block %" PRIu64 " (generation %#" PRIx64
			  ": misdirected)", blk, b, gen);
		return;
	}
	r = find_run(j, gen >> 32);
	if (!r || r->seed != seed) {
		violation(v, "block %" PRIu64 ": generation %#" PRIx64 " seed %" PRIu64
			  " matches no run of the journal", blk, gen, seed);
		return;
	}
	memcpy(scratch, p, bs);
	fill_payload(scratch, bs, seed, blk, gen);
	if (memcmp(scratch, p, bs)) {
		violation(v, "block %" PRIu64 ": payload differs from generation %#" PRIx64, blk,
			  gen);
		return;
	}
	if (gen < acked) {
		violation(v, "block %" PRIu64 ": stale: generation %#" PRIx64
			  " < acknowledged %#" PRIx64, blk, gen, acked);
		return;
	}
	if (!acked)
		v->valid_unacked++;
	else if (gen > acked)
		v->newer++;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmd_verify(int argc, char **argv)
{
	struct vstate v = { .max_report = 10 };
	const char *image, *jpath;
	struct journal j;
	off_t valid;
	uint64_t bs, lo = UINT64_MAX, hi = 0, *acked;
	unsigned char *inrange, *buf, *scratch;
	int fd;
	bool direct = true;

	if (argc < 3) {
		msg("verify: IMAGE and JOURNAL are required");
		return 2;
	}
	image = argv[1];
	jpath = argv[2];
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "--max-report") && i + 1 < argc &&
		    parse_u64(argv[i + 1], &v.max_report)) {
			i++;
			continue;
		}
		msg("verify: unknown option %s", argv[i]);
		return 2;
	}
	if (!journal_load(jpath, false, &j, &valid))
		return 1;
	if (j.nr_runs == 0) {
		msg("verify: journal %s records no run", jpath);
		return 1;
	}
	bs = j.runs[0].bs;
	for (size_t i = 0; i < j.nr_runs; i++) {
		const struct run *r = &j.runs[i];

		if (r->bs != bs) {
			msg("verify: journal %s mixes block sizes", jpath);
			return 1;
		}
		if (r->offset / bs < lo)
			lo = r->offset / bs;
		if (r->offset / bs + r->blocks > hi)
			hi = r->offset / bs + r->blocks;
	}
	acked = xmalloc((hi - lo) * sizeof(*acked));
	inrange = xmalloc(hi - lo);
	for (size_t i = 0; i < j.nr_runs; i++)
		memset(inrange + (j.runs[i].offset / bs - lo), 1, j.runs[i].blocks);
	for (size_t i = 0; i < j.nr_acks; i++) {
		uint64_t *a = &acked[j.acks[i].block - lo];

		if (j.acks[i].gen > *a)
			*a = j.acks[i].gen;
	}

	fd = open(image, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0 && errno == EINVAL) {
		direct = false;
		fd = open(image, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0) {
		msg("verify: %s: %s", image, strerror(errno));
		return 1;
	}
	buf = xaligned(CW_READ_CHUNK > bs ? CW_READ_CHUNK : bs);
	scratch = xaligned(bs);

	/* Contiguous runs of in-range blocks, read in large pieces. */
	for (uint64_t b = lo; b < hi;) {
		uint64_t n = 0, max = (CW_READ_CHUNK > bs ? CW_READ_CHUNK : bs) / bs;
		ssize_t got;

		if (!inrange[b - lo]) {
			b++;
			continue;
		}
		while (b + n < hi && n < max && inrange[b + n - lo])
			n++;
		got = pread(fd, buf, n * bs, (off_t)(b * bs));
		if (got < 0 && errno == EINVAL && direct) {
			/* O_DIRECT refused at read time: fall back once. */
			close(fd);
			direct = false;
			fd = open(image, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				msg("verify: %s: %s", image, strerror(errno));
				return 1;
			}
			continue;
		}
		if (got != (ssize_t)(n * bs)) {
			msg("verify: read %s at %" PRIu64 " (%" PRIu64 " bytes): %s", image, b * bs,
			    n * bs, got < 0 ? strerror(errno) : "short read");
			return 1;
		}
		for (uint64_t k = 0; k < n; k++)
			check_block(&j, &v, buf + k * bs, bs, b + k, acked[b + k - lo], scratch);
		b += n;
	}
	close(fd);

	printf("verify %s: %zu runs, %zu acknowledged writes%s; %" PRIu64 " blocks checked: "
	       "%" PRIu64 " acknowledged (%" PRIu64 " hold a later unacknowledged generation), "
	       "%" PRIu64 " valid but never acknowledged, %" PRIu64 " never written (zero); "
	       "%" PRIu64 " violations\n",
	       image, j.nr_runs, j.nr_acks, j.torn_bytes ? " (torn journal tail ignored)" : "",
	       v.checked, v.acked, v.newer, v.valid_unacked, v.zero, v.violations);
	if (v.violations > v.max_report)
		printf("  ... and %" PRIu64 " more violations\n", v.violations - v.max_report);
	free(acked);
	free(inrange);
	free(buf);
	free(scratch);
	journal_free(&j);
	return v.violations ? 1 : 0;
}

/*----------------------------------------------------------------*/
/* regions */

static int cmd_regions(int argc, char **argv)
{
	uint64_t region = 0, bs, *reg, prev = UINT64_MAX;
	bool all = false;
	struct journal j;
	off_t valid;
	size_t from, n;

	if (argc < 2) {
		msg("regions: JOURNAL is required");
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--all")) {
			all = true;
		} else if (!strcmp(argv[i], "--region-size") && i + 1 < argc &&
			   parse_u64(argv[i + 1], &region) && region) {
			i++;
		} else {
			msg("regions: bad option %s", argv[i]);
			return 2;
		}
	}
	if (!region) {
		msg("regions: --region-size is required");
		return 2;
	}
	if (!journal_load(argv[1], false, &j, &valid))
		return 1;
	if (j.nr_runs == 0)
		return 0;
	bs = j.runs[0].bs;
	from = all ? 0 : j.last_run_of_acks_start;
	n = j.nr_acks - from;
	reg = xmalloc(n * sizeof(*reg));
	for (size_t i = 0; i < n; i++)
		reg[i] = j.acks[from + i].block * bs / region;
	qsort(reg, n, sizeof(*reg), cmp_u64);
	for (size_t i = 0; i < n; i++) {
		if (reg[i] != prev)
			printf("%" PRIu64 "\n", reg[i]);
		prev = reg[i];
	}
	free(reg);
	journal_free(&j);
	return 0;
}

/*----------------------------------------------------------------*/

static void usage(FILE *to)
{
	fprintf(to,
		"Usage: fm_crashwriter write IMAGE JOURNAL --seed N --blocks B [--block-size 4096]\n"
		"                      [--offset BYTES] [--fsync-every K] [--duration S]\n"
		"       fm_crashwriter verify IMAGE JOURNAL [--max-report N]\n"
		"       fm_crashwriter regions JOURNAL --region-size BYTES [--all]\n");
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "write"))
		return cmd_write(argc - 1, argv + 1);
	if (!strcmp(argv[1], "verify"))
		return cmd_verify(argc - 1, argv + 1);
	if (!strcmp(argv[1], "regions"))
		return cmd_regions(argc - 1, argv + 1);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	usage(stderr);
	return 2;
}
