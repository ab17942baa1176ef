/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Logging: one message per call, to one target (stderr with a level prefix,
 * the systemd journal with structured fields, or syslog), plus an optional
 * log file and a hook (the daemon's start-up forwarding to the terminal).
 *
 * The level is read without a lock: a stale read only changes whether one
 * debug line is printed.  Everything else (target, file, hook, the journal
 * socket) is used under log_lock, which also keeps the lines of different
 * threads whole.
 *
 * The journal's native protocol (systemd's doc/JOURNAL_NATIVE_PROTOCOL): one
 * datagram per entry to /run/systemd/journal/socket, made of fields
 * "KEY=value\n", or "KEY\n" + the value's length as 64-bit little endian +
 * the value + "\n" when the value holds a newline.  Entries larger than a
 * datagram would need a memfd; ours are at most a few KiB, and a message
 * that does not fit is cut.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "fusemirror/common.h"

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

static atomic_int log_level = -1;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static enum fm_log_target log_target;           /* guarded by log_lock */
static bool syslog_open;                        /* guarded by log_lock */
static int log_file_fd = -1;                    /* guarded by log_lock */
static int journal_fd = -1;                     /* guarded by log_lock */
static char journal_path[108] = JOURNAL_SOCKET; /* guarded by log_lock */
static fm_log_hook_fn log_hook;                 /* guarded by log_lock */
static void *log_hook_ctx;                      /* guarded by log_lock */

static const char *const level_names[] = {
	[FM_LOG_ERR] = "error", [FM_LOG_WARNING] = "warning",
	[FM_LOG_NOTICE] = "notice", [FM_LOG_INFO] = "info",
	[FM_LOG_DEBUG] = "debug",
};

enum fm_log_level fm_log_get_level(void)
{
	int l = atomic_load_explicit(&log_level, memory_order_relaxed);

	if (fm_unlikely(l < 0)) {
		l = getenv("FUSEMIRROR_DEBUG") ? FM_LOG_DEBUG : FM_LOG_NOTICE;
		atomic_store(&log_level, l);
	}
	return (enum fm_log_level)l;
}

void fm_log_set_level(enum fm_log_level level)
{
	atomic_store(&log_level, (int)level);
}

int fm_log_level_parse(const char *name)
{
	for (int l = FM_LOG_ERR; l <= FM_LOG_DEBUG; l++)
		if (!strcmp(name, level_names[l]))
			return l;
	if (!strcmp(name, "err"))
		return FM_LOG_ERR;
	if (!strcmp(name, "warn"))
		return FM_LOG_WARNING;
	return -EINVAL;
}

const char *fm_log_level_name(enum fm_log_level level)
{
	return level >= FM_LOG_ERR && level <= FM_LOG_DEBUG ? level_names[level] : "?";
}

void fm_log_set_target(enum fm_log_target target)
{
	pthread_mutex_lock(&log_lock);
	if (target == FM_LOG_TARGET_SYSLOG && !syslog_open) {
		openlog("fusemirror", LOG_PID | LOG_CONS, LOG_DAEMON);
		syslog_open = true;
	}
	log_target = target;
	pthread_mutex_unlock(&log_lock);
}

enum fm_log_target fm_log_get_target(void)
{
	enum fm_log_target t;

	pthread_mutex_lock(&log_lock);
	t = log_target;
	pthread_mutex_unlock(&log_lock);
	return t;
}

void fm_log_use_syslog(bool on)
{
	fm_log_set_target(on ? FM_LOG_TARGET_SYSLOG : FM_LOG_TARGET_STDERR);
}

bool fm_log_stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

bool fm_log_journal_available(void)
{
	struct stat st;
	bool ok;

	pthread_mutex_lock(&log_lock);
	ok = stat(journal_path, &st) == 0 && S_ISSOCK(st.st_mode);
	pthread_mutex_unlock(&log_lock);
	return ok;
}

void fm_log_set_journal_socket(const char *path)
{
	pthread_mutex_lock(&log_lock);
	snprintf(journal_path, sizeof(journal_path), "%s", path ? path : JOURNAL_SOCKET);
	if (journal_fd >= 0)
		close(journal_fd);
	journal_fd = -1;
	pthread_mutex_unlock(&log_lock);
}

int fm_log_set_file(const char *path)
{
	int fd = -1;

	if (path) {
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
		if (fd < 0)
			return -errno;
	}
	pthread_mutex_lock(&log_lock);
	if (log_file_fd >= 0)
		close(log_file_fd);
	log_file_fd = fd;
	pthread_mutex_unlock(&log_lock);
	return 0;
}

void fm_log_set_hook(fm_log_hook_fn fn, void *ctx)
{
	pthread_mutex_lock(&log_lock);
	log_hook = fn;
	log_hook_ctx = ctx;
	pthread_mutex_unlock(&log_lock);
}

/*----------------------------------------------------------------*/
/* the journal */

struct jbuf {
	char data[8192];
	size_t len;
	bool cut;
};

static void jbuf_put(struct jbuf *b, const void *p, size_t n)
{
	if (n > sizeof(b->data) - b->len) {
		n = sizeof(b->data) - b->len;
		b->cut = true;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

/* One field: @key (@klen bytes) and @val. */
static void jbuf_field(struct jbuf *b, const char *key, size_t klen, const char *val)
{
	size_t vlen = strlen(val);

	/* Room for the whole field, or none of it: a cut field would
	 * corrupt the datagram. */
	if (klen + vlen + 10 > sizeof(b->data) - b->len) {
		b->cut = true;
		return;
	}
	jbuf_put(b, key, klen);
	if (memchr(val, '\n', vlen)) {
		uint8_t le[8];

		for (unsigned i = 0; i < 8; i++)
			le[i] = (uint8_t)((uint64_t)vlen >> (8 * i));
		jbuf_put(b, "\n", 1);
		jbuf_put(b, le, 8);
	} else {
		jbuf_put(b, "=", 1);
	}
	jbuf_put(b, val, vlen);
	jbuf_put(b, "\n", 1);
}

/* A field name the journal accepts: [A-Z0-9_], not starting with '_'. */
static bool journal_key_ok(const char *k, size_t n)
{
	if (n == 0 || n > 64 || k[0] == '_' || (k[0] >= '0' && k[0] <= '9'))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((k[i] >= 'A' && k[i] <= 'Z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '_'))
			return false;
	return true;
}

/* Send one entry; called under log_lock.  Returns 0 or -errno. */
static int journal_send_locked(enum fm_log_level level, const char *const *fields,
			       const char *msg)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct jbuf *b;
	char prio[2] = { (char)('0' + (int)level), 0 };
	int r = 0;

	if (journal_fd < 0) {
		journal_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (journal_fd < 0)
			return -errno;
	}
	b = malloc(sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->len = 0;
	b->cut = false;
	jbuf_field(b, "PRIORITY", 8, prio);
	jbuf_field(b, "SYSLOG_IDENTIFIER", 17, "fusemirror");
	for (const char *const *f = fields; f && *f; f++) {
		const char *eq = strchr(*f, '=');

		if (eq && journal_key_ok(*f, (size_t)(eq - *f)))
			jbuf_field(b, *f, (size_t)(eq - *f), eq + 1);
	}
	jbuf_field(b, "MESSAGE", 7, msg);
	memcpy(sa.sun_path, journal_path, sizeof(sa.sun_path));
	if (sendto(journal_fd, b->data, b->len, MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   sizeof(sa)) < 0)
		r = -errno;
	free(b);
	return r;
}

/*----------------------------------------------------------------*/

static void log_file_write_locked(enum fm_log_level level, const char *msg)
{
	char line[1200], stamp[32];
	struct timespec ts;
	struct tm tm;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	n = snprintf(line, sizeof(line), "%s fusemirror[%d]: %s: %s\n", stamp, (int)getpid(),
		     level_names[level], msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = (int)sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	/* O_APPEND: one write is one line, also with several writers. */
	if (write(log_file_fd, line, (size_t)n) < 0) {
		/* Nowhere left to say it. */
	}
}

static void log_emit(enum fm_log_level level, const char *const *fields, const char *fmt,
		     va_list ap) __attribute__((format(printf, 3, 0)));

static void log_emit(enum fm_log_level level, const char *const *fields, const char *fmt,
		     va_list ap)
{
	char msg[1024];

	if ((int)level > (int)fm_log_get_level())
		return;
	if (level < FM_LOG_ERR)
		level = FM_LOG_ERR;
	if (level > FM_LOG_DEBUG)
		level = FM_LOG_DEBUG;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	pthread_mutex_lock(&log_lock);
	switch (log_target) {
	case FM_LOG_TARGET_JOURNAL:
		if (journal_send_locked(level, fields, msg) == 0)
			break;
		/* The journal went away: stderr is better than nothing. */
		/* fallthrough */
	case FM_LOG_TARGET_STDERR:
		/* One fprintf so that a line is written whole. */
		fprintf(stderr, "fusemirror: %s: %s\n", level_names[level], msg);
		break;
	case FM_LOG_TARGET_SYSLOG:
		syslog((int)level, "%s", msg);
		break;
	case FM_LOG_TARGET_NONE:
		break;
	}
	if (log_file_fd >= 0)
		log_file_write_locked(level, msg);
	if (log_hook)
		log_hook(log_hook_ctx, level, msg);
	pthread_mutex_unlock(&log_lock);
}

void fm_logv(enum fm_log_level level, const char *fmt, va_list ap)
{
	log_emit(level, NULL, fmt, ap);
}

void fm_log(enum fm_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(level, NULL, fmt, ap);
	va_end(ap);
}

void fm_fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(FM_LOG_ERR, NULL, fmt, ap);
	va_end(ap);
	abort();
}

void fm_log_fields(enum fm_log_level level, const char *const *fields, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(level, fields, fmt, ap);
	va_end(ap);
}

uint64_t fm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
