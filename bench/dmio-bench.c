/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * dmio-bench: random-offset I/O through the asynchronous dmio API, for
 * comparison with fio (see bench/README.md and bench/dmio-bench.sh).
 *
 *   dmio-bench --mode read|write --qd N --bs BYTES --runtime SECONDS
 *              [--ramp SECONDS] [--regions-file LIST]... FILE [FILE...]
 *
 * Model: QD "slots", each owning one aligned buffer of @bs bytes and one
 * struct dmio_request.  Exactly one request per slot is in flight at any
 * time: the main thread submits the first request of every slot, then each
 * completion callback (on a dmio engine thread) submits that slot's next
 * request at a new random bs-aligned offset, drawn from the slot's own
 * xorshift64* generator.  That is how the mirror drives dmio, QD1 included.
 *
 * With --submitters N the callback instead hands the slot to N submitter
 * threads (a queue under a mutex), which call dmio(): that is how FUSE
 * worker threads will drive it, and it shows what it costs when the thread
 * that submits is not the engine's (wake-ups, io_uring task_work run on the
 * submitting thread).
 *
 * A write goes to every FILE at the same offset as ONE dmio request with
 * one region per file (the mirror's fan-out).  A read goes to one region:
 * with several files, each read picks a file at random (a mirror reading
 * any in-sync leg).
 *
 * Invariants:
 *   - A slot's fields other than its counters are written only by whoever
 *     owns the slot's single in-flight request: the main thread before the
 *     first submission, then the completion callback of the slot's request.
 *     So the callback needs no lock.
 *   - The counters (ios, errors, lat_ns) have a single writer (the same
 *     owner) and are read by the main thread with relaxed atomic loads; a
 *     snapshot may be one completion old, which is noise.
 *   - @inflight counts slots whose request chain is still running.  It only
 *     drops once @stop is set (or a resubmission fails); when it reaches 0
 *     the last callback signals the main thread, under @drain_lock so that
 *     the wake-up cannot be lost.  The buffers are freed only after that.
 *
 * Output: stdout gets ONE line of key=value pairs (iops first) for scripts;
 * stderr gets the engine's counters and the CPU use, for humans.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

#include "fusemirror/common.h"
#include "fusemirror/dmio.h"

struct bench;

struct slot {
	struct bench *bench;
	struct dmio_request req;
	struct dmio_region where[DMIO_MAX_REGIONS];
	void *buf;
	struct slot *next;         /* --submitters: in the hand-off queue */
	uint64_t rng;              /* xorshift64* state, never 0 */
	uint64_t submit_ns;        /* when the request in flight was issued */
	_Atomic uint64_t ios;      /* completed requests */
	_Atomic uint64_t errors;   /* requests with an error bit, failed submits */
	_Atomic uint64_t lat_ns;   /* sum of completion latencies */
} __attribute__((aligned(64)));    /* one cache line per slot's counters */

struct bench {
	enum dmio_op op;
	unsigned qd;
	uint32_t bs;
	unsigned ndevs;
	struct dmio_dev *devs[DMIO_MAX_REGIONS];
	uint64_t nblocks;          /* bs blocks in the smallest file */
	struct slot *slots;

	atomic_bool stop;
	atomic_uint inflight;
	pthread_mutex_t drain_lock;
	pthread_cond_t drain_cond;

	/* --submitters: slots waiting for a submitter thread. */
	unsigned nsubmitters;
	pthread_t *submitters;
	pthread_mutex_t queue_lock;     /* guards the three fields below */
	pthread_cond_t queue_cond;
	struct slot *queue_head, **queue_tail;
	bool queue_exit;
};

/*----------------------------------------------------------------*/

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t xorshift64s(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* Uniform in [0, n) without a division (Lemire's multiply-shift). */
static inline uint64_t rand_below(uint64_t *s, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)xorshift64s(s) * n) >> 64);
}

static inline void counter_inc(_Atomic uint64_t *c, uint64_t by)
{
	/* Single writer: a plain load and store, no locked instruction. */
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by,
			      memory_order_relaxed);
}

/*----------------------------------------------------------------*/

/* Point @s's regions at a new random block. */
static void slot_pick(struct slot *s)
{
	struct bench *b = s->bench;
	uint64_t block = rand_below(&s->rng, b->nblocks);
	uint64_t sector = block * (b->bs >> FM_SECTOR_SHIFT);

	if (b->op == DMIO_OP_READ) {
		unsigned d = b->ndevs > 1 ? (unsigned)rand_below(&s->rng, b->ndevs) : 0;

		s->where[0].dev = b->devs[d];
		s->where[0].sector = sector;
	} else {
		for (unsigned i = 0; i < b->ndevs; i++)
			s->where[i].sector = sector;
	}
}

static unsigned slot_nregions(const struct slot *s)
{
	return s->bench->op == DMIO_OP_READ ? 1 : s->bench->ndevs;
}

static void bench_slot_done(struct bench *b)
{
	if (atomic_fetch_sub(&b->inflight, 1) == 1) {
		pthread_mutex_lock(&b->drain_lock);
		pthread_cond_signal(&b->drain_cond);
		pthread_mutex_unlock(&b->drain_lock);
	}
}

/* Issue @s's next request, or retire the slot once the run is over. */
static void slot_submit(struct slot *s, uint64_t now)
{
	struct bench *b = s->bench;
	int r;

	if (atomic_load_explicit(&b->stop, memory_order_relaxed)) {
		bench_slot_done(b);
		return;
	}
	slot_pick(s);
	s->submit_ns = now;
	r = dmio(&s->req, slot_nregions(s), s->where, NULL);
	if (fm_unlikely(r < 0)) {
		counter_inc(&s->errors, 1);
		bench_slot_done(b);
	}
}

static void *submitter_main(void *arg)
{
	struct bench *b = arg;

	pthread_mutex_lock(&b->queue_lock);
	for (;;) {
		struct slot *s = b->queue_head;

		if (!s) {
			if (b->queue_exit)
				break;
			pthread_cond_wait(&b->queue_cond, &b->queue_lock);
			continue;
		}
		b->queue_head = s->next;
		if (!b->queue_head)
			b->queue_tail = &b->queue_head;
		pthread_mutex_unlock(&b->queue_lock);
		slot_submit(s, fm_now_ns());
		pthread_mutex_lock(&b->queue_lock);
	}
	pthread_mutex_unlock(&b->queue_lock);
	return NULL;
}

static void slot_complete(unsigned long error_bits, void *context)
{
	struct slot *s = context;
	struct bench *b = s->bench;
	uint64_t now = fm_now_ns();

	counter_inc(&s->lat_ns, now - s->submit_ns);
	counter_inc(&s->ios, 1);
	if (fm_unlikely(error_bits))
		counter_inc(&s->errors, 1);

	if (!b->nsubmitters) {
		slot_submit(s, now);
		return;
	}
	s->next = NULL;
	pthread_mutex_lock(&b->queue_lock);
	*b->queue_tail = s;
	b->queue_tail = &s->next;
	pthread_cond_signal(&b->queue_cond);
	pthread_mutex_unlock(&b->queue_lock);
}

/*----------------------------------------------------------------*/

struct snapshot {
	uint64_t ns;
	uint64_t ios, errors, lat_ns;
	struct dmio_stats stats;
	struct rusage ru;
};

static void bench_snapshot(struct bench *b, struct snapshot *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->ns = fm_now_ns();
	for (unsigned i = 0; i < b->qd; i++) {
		struct slot *s = &b->slots[i];

		ret->ios += atomic_load_explicit(&s->ios, memory_order_relaxed);
		ret->errors += atomic_load_explicit(&s->errors, memory_order_relaxed);
		ret->lat_ns += atomic_load_explicit(&s->lat_ns, memory_order_relaxed);
	}
	dmio_get_stats(&ret->stats);
	getrusage(RUSAGE_SELF, &ret->ru);
}

static void sleep_until_ns(uint64_t deadline)
{
	struct timespec ts = {
		.tv_sec = (time_t)(deadline / 1000000000ull),
		.tv_nsec = (long)(deadline % 1000000000ull),
	};

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static double tv_sec(const struct timeval *tv)
{
	return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

/*----------------------------------------------------------------*/

/* Append the non-empty, non-comment lines of @list to @paths. */
static int read_regions_file(const char *list, GPtrArray *paths, GError **error)
{
	g_autofree char *text = NULL;
	g_auto(GStrv) lines = NULL;

	if (!g_file_get_contents(list, &text, NULL, error))
		return -1;
	lines = g_strsplit(text, "\n", -1);
	for (char **l = lines; *l; l++) {
		char *p = g_strstrip(*l);

		if (*p && *p != '#')
			g_ptr_array_add(paths, g_strdup(p));
	}
	return 0;
}

static int opt_qd = 1;
static char *opt_mode;
static char *opt_bs;
static double opt_runtime = 10;
static double opt_ramp;
static char **opt_regions_files;
static int opt_rings;
static int opt_sq_entries;
static int opt_submitters;
static gboolean opt_no_direct;
static gint64 opt_seed;

static gboolean parse_qd(const char *name, const char *value, gpointer data,
			 GError **error)
{
	char *end;
	long v;

	(void)data;
	errno = 0;
	v = strtol(value, &end, 10);
	if (errno || *end || v < 1 || v > 65536) {
		g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
			    "%s %s: expected 1..65536", name, value);
		return FALSE;
	}
	opt_qd = (int)v;
	return TRUE;
}

static const GOptionEntry entries[] = {
	{ "mode", 'm', 0, G_OPTION_ARG_STRING, &opt_mode,
	  "read or write (required)", "read|write" },
	{ "qd", 'q', 0, G_OPTION_ARG_CALLBACK, (gpointer)parse_qd,
	  "requests kept in flight (default 1)", "N" },
	{ "bs", 'b', 0, G_OPTION_ARG_STRING, &opt_bs,
	  "bytes per request, a multiple of 512 (default 4096; 4k, 64k, 1M accepted)",
	  "BYTES" },
	{ "runtime", 't', 0, G_OPTION_ARG_DOUBLE, &opt_runtime,
	  "measured seconds (default 10)", "SECONDS" },
	{ "ramp", 0, 0, G_OPTION_ARG_DOUBLE, &opt_ramp,
	  "seconds of I/O before measuring, like fio's ramp_time (default 0)",
	  "SECONDS" },
	{ "regions-file", 'f', 0, G_OPTION_ARG_FILENAME_ARRAY, &opt_regions_files,
	  "read more FILEs from LIST, one path a line (# comments); repeatable",
	  "LIST" },
	{ "rings", 0, 0, G_OPTION_ARG_INT, &opt_rings,
	  "dmio_engine_opts.rings (default 0: the engine's default)", "N" },
	{ "sq-entries", 0, 0, G_OPTION_ARG_INT, &opt_sq_entries,
	  "dmio_engine_opts.sq_entries (default 0: the engine's default)", "N" },
	{ "submitters", 0, 0, G_OPTION_ARG_INT, &opt_submitters,
	  "N threads issue the requests, as FUSE workers will (default 0: the "
	  "completion callback does)", "N" },
	{ "no-direct", 0, 0, G_OPTION_ARG_NONE, &opt_no_direct,
	  "open with DMIO_DEV_NO_DIRECT (page cache; not comparable to fio --direct=1)",
	  NULL },
	{ "seed", 0, 0, G_OPTION_ARG_INT64, &opt_seed,
	  "PRNG seed (default 0: from the clock)", "N" },
	G_OPTION_ENTRY_NULL
};

int main(int argc, char **argv)
{
	g_autoptr(GOptionContext) ctx = NULL;
	g_autoptr(GError) error = NULL;
	g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
	struct dmio_client *client = NULL;
	struct dmio_engine_opts eopts = { 0 };
	struct bench b = { 0 };
	struct snapshot s0, s1;
	uint64_t bs = 4096, seed, t0;
	unsigned long long min_size = ULLONG_MAX;
	int r, ret = 1;

	ctx = g_option_context_new("FILE [FILE...]");
	g_option_context_set_summary(ctx,
		"Keep QD random-offset requests in flight through the asynchronous dmio API\n"
		"for a fixed time and print \"iops=N mbps=N errors=N ...\" on stdout.\n"
		"A write goes to every FILE at once (one dmio request, one region per FILE).");
	g_option_context_add_main_entries(ctx, entries, NULL);
	if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
		fprintf(stderr, "dmio-bench: %s\n", error->message);
		return 2;
	}

	if (!opt_mode || (strcmp(opt_mode, "read") && strcmp(opt_mode, "write"))) {
		fprintf(stderr, "dmio-bench: --mode read|write is required\n");
		return 2;
	}
	b.op = strcmp(opt_mode, "read") ? DMIO_OP_WRITE : DMIO_OP_READ;
	b.qd = (unsigned)opt_qd;
	if (opt_bs && (fm_parse_size(opt_bs, &bs) < 0 || bs == 0 ||
		       bs % FM_SECTOR_SIZE || bs > (1u << 30))) {
		fprintf(stderr, "dmio-bench: --bs %s: not a multiple of 512 up to 1 GiB\n",
			opt_bs);
		return 2;
	}
	b.bs = (uint32_t)bs;
	if (!(opt_runtime > 0) || !(opt_ramp >= 0) || opt_rings < 0 || opt_sq_entries < 0 ||
	    opt_submitters < 0 || opt_submitters > 1024) {
		fprintf(stderr, "dmio-bench: bad --runtime, --ramp, --rings, --sq-entries "
			"or --submitters\n");
		return 2;
	}

	for (char **l = opt_regions_files; l && *l; l++)
		if (read_regions_file(*l, paths, &error) < 0) {
			fprintf(stderr, "dmio-bench: --regions-file: %s\n", error->message);
			return 2;
		}
	for (int i = 1; i < argc; i++)
		g_ptr_array_add(paths, g_strdup(argv[i]));
	if (paths->len == 0 || paths->len > DMIO_MAX_REGIONS) {
		fprintf(stderr, "dmio-bench: need 1..%d files (see --help)\n",
			DMIO_MAX_REGIONS);
		return 2;
	}
	b.ndevs = paths->len;

	eopts.rings = (unsigned)opt_rings;
	eopts.sq_entries = (unsigned)opt_sq_entries;
	r = dmio_engine_init(&eopts);
	if (r < 0) {
		fprintf(stderr, "dmio-bench: dmio_engine_init: %s\n", g_strerror(-r));
		return 1;
	}

	for (unsigned i = 0; i < b.ndevs; i++) {
		const char *p = g_ptr_array_index(paths, i);
		unsigned flags = (b.op == DMIO_OP_READ ? DMIO_DEV_RDONLY : 0) |
				 (opt_no_direct ? DMIO_DEV_NO_DIRECT : 0);

		r = dmio_dev_open(p, flags, &b.devs[i]);
		if (r < 0) {
			fprintf(stderr, "dmio-bench: %s: %s\n", p, g_strerror(-r));
			goto out;
		}
		if (!opt_no_direct && !dmio_dev_is_direct(b.devs[i]))
			fprintf(stderr, "dmio-bench: WARNING: %s: the engine opened it "
				"buffered (page cache), not O_DIRECT\n", p);
		if (dmio_dev_logical_block_size(b.devs[i]) &&
		    bs % dmio_dev_logical_block_size(b.devs[i]))
			fprintf(stderr, "dmio-bench: WARNING: %s: --bs %" PRIu64
				" is not a multiple of its logical block size %u: "
				"requests will be bounced\n",
				p, bs, dmio_dev_logical_block_size(b.devs[i]));
		if (dmio_dev_size(b.devs[i]) < min_size)
			min_size = dmio_dev_size(b.devs[i]);
	}
	b.nblocks = min_size / bs;
	if (b.nblocks == 0) {
		fprintf(stderr, "dmio-bench: the smallest file is shorter than --bs\n");
		goto out;
	}

	client = dmio_client_create(b.qd);
	if (!client) {
		fprintf(stderr, "dmio-bench: dmio_client_create(%u) failed\n", b.qd);
		goto out;
	}

	b.slots = aligned_alloc(64, sizeof(*b.slots) * b.qd);
	if (!b.slots) {
		fprintf(stderr, "dmio-bench: out of memory\n");
		goto out;
	}
	memset(b.slots, 0, sizeof(*b.slots) * b.qd);
	pthread_mutex_init(&b.drain_lock, NULL);
	pthread_cond_init(&b.drain_cond, NULL);
	pthread_mutex_init(&b.queue_lock, NULL);
	pthread_cond_init(&b.queue_cond, NULL);
	b.queue_tail = &b.queue_head;
	if (opt_submitters) {
		b.submitters = calloc((size_t)opt_submitters, sizeof(*b.submitters));
		if (!b.submitters) {
			fprintf(stderr, "dmio-bench: out of memory\n");
			goto out_free;
		}
		for (int i = 0; i < opt_submitters; i++) {
			r = pthread_create(&b.submitters[i], NULL, submitter_main, &b);
			if (r) {
				fprintf(stderr, "dmio-bench: pthread_create: %s\n", g_strerror(r));
				goto out_free;
			}
			pthread_setname_np(b.submitters[i], "bench-submit");
			b.nsubmitters++;
		}
	}

	seed = opt_seed ? (uint64_t)opt_seed : fm_now_ns() ^ ((uint64_t)getpid() << 32);
	for (unsigned i = 0; i < b.qd; i++) {
		struct slot *s = &b.slots[i];

		s->bench = &b;
		do
			s->rng = splitmix64(&seed);
		while (s->rng == 0);
		r = posix_memalign(&s->buf, 4096, bs);
		if (r) {
			fprintf(stderr, "dmio-bench: posix_memalign: %s\n", g_strerror(r));
			goto out_free;
		}
		/* Incompressible, non-zero data, and every page touched now. */
		for (size_t o = 0; o < bs; o += sizeof(uint64_t)) {
			uint64_t v = xorshift64s(&s->rng);

			memcpy((char *)s->buf + o, &v, sizeof(v));
		}
		for (unsigned d = 0; d < b.ndevs; d++) {
			s->where[d].dev = b.devs[d];
			s->where[d].count = bs >> FM_SECTOR_SHIFT;
		}
		s->req = (struct dmio_request){
			.op = b.op,
			.mem = { .type = DMIO_MEM_VM, .ptr.vma = s->buf },
			.notify_fn = slot_complete,
			.notify_context = s,
			.client = client,
		};
	}

	/* Go. */
	atomic_store(&b.inflight, b.qd);
	t0 = fm_now_ns();
	for (unsigned i = 0; i < b.qd; i++) {
		struct slot *s = &b.slots[i];

		slot_pick(s);
		s->submit_ns = fm_now_ns();
		r = dmio(&s->req, slot_nregions(s), s->where, NULL);
		if (r < 0) {
			fprintf(stderr, "dmio-bench: dmio: %s\n", g_strerror(-r));
			counter_inc(&s->errors, 1);
			bench_slot_done(&b);
		}
	}

	sleep_until_ns(t0 + (uint64_t)(opt_ramp * 1e9));
	bench_snapshot(&b, &s0);
	sleep_until_ns(s0.ns + (uint64_t)(opt_runtime * 1e9));
	bench_snapshot(&b, &s1);

	/* Stop resubmitting and wait for what is in flight. */
	atomic_store(&b.stop, true);
	pthread_mutex_lock(&b.drain_lock);
	while (atomic_load(&b.inflight) != 0)
		pthread_cond_wait(&b.drain_cond, &b.drain_lock);
	pthread_mutex_unlock(&b.drain_lock);

	{
		double secs = (double)(s1.ns - s0.ns) / 1e9;
		uint64_t ios = s1.ios - s0.ios;
		uint64_t errors = 0;
		double usr = tv_sec(&s1.ru.ru_utime) - tv_sec(&s0.ru.ru_utime);
		double sys = tv_sec(&s1.ru.ru_stime) - tv_sec(&s0.ru.ru_stime);
		uint64_t reqs = s1.stats.requests - s0.stats.requests;
		uint64_t sqes = s1.stats.sqes - s0.stats.sqes;
		uint64_t submits = s1.stats.submits - s0.stats.submits;

		/* Errors over the whole run, drain included: any makes it invalid. */
		for (unsigned i = 0; i < b.qd; i++)
			errors += atomic_load(&b.slots[i].errors);

		printf("iops=%.0f mbps=%.1f errors=%" PRIu64 " ios=%" PRIu64
		       " seconds=%.3f lat_us=%.2f usr_cpu=%.2f sys_cpu=%.2f"
		       " mode=%s qd=%u bs=%u regions=%u\n",
		       (double)ios / secs, (double)ios * b.bs / secs / (1024 * 1024),
		       errors, ios, secs,
		       ios ? (double)(s1.lat_ns - s0.lat_ns) / (double)ios / 1e3 : 0.0,
		       100 * usr / secs, 100 * sys / secs,
		       opt_mode, b.qd, b.bs, b.op == DMIO_OP_READ ? 1 : b.ndevs);
		fflush(stdout);

		fprintf(stderr,
			"dmio-bench: dmio_get_stats over the measured %.2f s: "
			"requests=%" PRIu64 " sqes=%" PRIu64 " submits=%" PRIu64
			" bounced=%" PRIu64 " resubmits=%" PRIu64 " region_errors=%" PRIu64 "\n",
			secs, reqs, sqes, submits,
			s1.stats.bounced - s0.stats.bounced,
			s1.stats.resubmits - s0.stats.resubmits,
			s1.stats.region_errors - s0.stats.region_errors);
		fprintf(stderr,
			"dmio-bench: sqes/request=%.2f sqes/submit=%.2f requests/submit=%.2f\n",
			reqs ? (double)sqes / (double)reqs : 0.0,
			submits ? (double)sqes / (double)submits : 0.0,
			submits ? (double)reqs / (double)submits : 0.0);
		fprintf(stderr,
			"dmio-bench: cpu usr=%.1f%% sys=%.1f%% of one core, %.2f us/request; "
			"context switches voluntary=%ld involuntary=%ld (%.2f/request)\n",
			100 * usr / secs, 100 * sys / secs,
			ios ? (usr + sys) * 1e6 / (double)ios : 0.0,
			s1.ru.ru_nvcsw - s0.ru.ru_nvcsw, s1.ru.ru_nivcsw - s0.ru.ru_nivcsw,
			ios ? (double)(s1.ru.ru_nvcsw - s0.ru.ru_nvcsw +
				       s1.ru.ru_nivcsw - s0.ru.ru_nivcsw) / (double)ios : 0.0);
		ret = errors ? 1 : 0;
	}

out_free:
	pthread_mutex_lock(&b.queue_lock);
	b.queue_exit = true;
	pthread_cond_broadcast(&b.queue_cond);
	pthread_mutex_unlock(&b.queue_lock);
	for (unsigned i = 0; i < b.nsubmitters; i++)
		pthread_join(b.submitters[i], NULL);
	free(b.submitters);
	pthread_cond_destroy(&b.queue_cond);
	pthread_mutex_destroy(&b.queue_lock);
	for (unsigned i = 0; i < b.qd; i++)
		free(b.slots[i].buf);
	free(b.slots);
	pthread_cond_destroy(&b.drain_cond);
	pthread_mutex_destroy(&b.drain_lock);
out:
	dmio_client_destroy(client);
	for (unsigned i = 0; i < b.ndevs; i++)
		dmio_dev_close(b.devs[i]);
	dmio_engine_shutdown();
	g_free(opt_mode);
	g_free(opt_bs);
	g_strfreev(opt_regions_files);
	return ret;
}
