/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fusemirror common helpers: logging, crc32c, small arithmetic, iovec ranges,
 * background threads, huge-page memory.
 *
 * Threading: every function here may be called from any thread.  The log
 * level, target, file and hook are process globals; messages are written
 * under one lock, so lines of different threads never interleave.
 */
#ifndef FUSEMIRROR_COMMON_H
#define FUSEMIRROR_COMMON_H

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define FM_SECTOR_SHIFT 9
#define FM_SECTOR_SIZE  (1u << FM_SECTOR_SHIFT)
#define FM_PAGE_SIZE    4096u
#define FM_HUGE_PAGE_SIZE (2u << 20)

#define fm_likely(x)    __builtin_expect(!!(x), 1)
#define fm_unlikely(x)  __builtin_expect(!!(x), 0)

#define FM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Round @x up/down to a multiple of @a, which must be a power of two. */
#define FM_ALIGN_UP(x, a)   (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))
#define FM_ALIGN_DOWN(x, a) ((x) & ~((__typeof__(x))(a) - 1))
#define FM_IS_ALIGNED(x, a) (((x) & ((__typeof__(x))(a) - 1)) == 0)

static inline bool fm_is_power_of_2(uint64_t x)
{
	return x != 0 && (x & (x - 1)) == 0;
}

/* Log levels, ordered: a message is printed when its level <= fm_log_level. */
enum fm_log_level {
	FM_LOG_ERR = 3,     /* an operation failed and a user must know */
	FM_LOG_WARNING = 4, /* degraded, retried, or refused input */
	FM_LOG_NOTICE = 5,  /* state changes (mount, leg failed, resync done) */
	FM_LOG_INFO = 6,    /* progress and configuration */
	FM_LOG_DEBUG = 7,   /* library internals; the only level modules use */
};

/* Current threshold; default FM_LOG_NOTICE, or FM_LOG_DEBUG when the
 * environment variable FUSEMIRROR_DEBUG is set at first use. */
enum fm_log_level fm_log_get_level(void);
void fm_log_set_level(enum fm_log_level level);
/* "error", "warning", "notice", "info", "debug" -> the level, or -EINVAL. */
int fm_log_level_parse(const char *name);
const char *fm_log_level_name(enum fm_log_level level);

/* Where messages go.  Exactly one target, plus an optional log file. */
enum fm_log_target {
	FM_LOG_TARGET_STDERR = 0,       /* "fusemirror: LEVEL: message" (the default) */
	FM_LOG_TARGET_JOURNAL,          /* systemd-journald's native protocol, with fields */
	FM_LOG_TARGET_SYSLOG,           /* syslog(3), facility daemon */
	FM_LOG_TARGET_NONE,             /* nowhere (the log file and hook still get it) */
};
void fm_log_set_target(enum fm_log_target target);
enum fm_log_target fm_log_get_target(void);
/* Same as fm_log_set_target(on ? SYSLOG : STDERR). */
void fm_log_use_syslog(bool on);
/* True when stderr is a stream systemd connected to the journal: the
 * device:inode in $JOURNAL_STREAM are stderr's (see systemd.exec(5)). */
bool fm_log_stderr_is_journal(void);
/* True when the journal's socket exists (journald runs). */
bool fm_log_journal_available(void);
/* The journal socket; default /run/systemd/journal/socket.  For tests. */
void fm_log_set_journal_socket(const char *path);
/*
 * Also append every message (with a UTC time stamp and the pid) to @path,
 * created 0640 if missing; NULL closes the file.  Returns 0 or -errno
 * (the previous file, if any, stays in use then).
 */
int fm_log_set_file(const char *path);

/*
 * A hook that sees each message that passes the level, after it was
 * written to the target: the daemon forwards its start-up messages through
 * it to the terminal that ran `mount`.  Called on the logging thread, under
 * the log's lock (it must not log).  NULL removes it; on return from
 * fm_log_set_hook() no call of the previous hook is running.
 */
typedef void (*fm_log_hook_fn)(void *ctx, enum fm_log_level level, const char *msg);
void fm_log_set_hook(fm_log_hook_fn fn, void *ctx);

void fm_log(enum fm_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void fm_logv(enum fm_log_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
/*
 * A message with structured fields: @fields is a NULL-terminated array of
 * "KEY=value" strings (KEY: uppercase letters, digits, '_', not starting
 * with '_'), e.g. "ARRAY_UUID=3f2a...", "LEG=/dev/sdb", "EVENT=Fail".  The
 * journal stores them as fields of the entry; the other targets print the
 * message alone (it must read complete without the fields).  @fields may
 * be NULL.
 */
void fm_log_fields(enum fm_log_level level, const char *const *fields, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * A broken invariant of a library (a bug, not an I/O error): log @fmt at
 * error level and abort().  The one message above debug level a library
 * layer may write itself: nobody is left to report it to.
 */
_Noreturn void fm_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define fm_err(...)    fm_log(FM_LOG_ERR, __VA_ARGS__)
#define fm_warn(...)   fm_log(FM_LOG_WARNING, __VA_ARGS__)
#define fm_notice(...) fm_log(FM_LOG_NOTICE, __VA_ARGS__)
#define fm_info(...)   fm_log(FM_LOG_INFO, __VA_ARGS__)
#define fm_debug(...)                                                   \
	do {                                                            \
		if (fm_unlikely(fm_log_get_level() >= FM_LOG_DEBUG))    \
			fm_log(FM_LOG_DEBUG, __VA_ARGS__);              \
	} while (0)

/*
 * CRC-32C (Castagnoli, the iSCSI/ext4/btrfs polynomial).  Continue a running
 * checksum by passing the previous return value as @crc; start with 0.
 * Uses the SSE4.2 instruction when the CPU has it.
 */
uint32_t fm_crc32c(uint32_t crc, const void *data, size_t len);
/* out[i] = fm_crc32c(0, data + i * block_size, block_size) for i < @n:
 * the checksums of @n consecutive blocks, computed three at a time with
 * SSE4.2 (three times the speed of one chain) when block_size is a
 * multiple of 8. */
void fm_crc32c_blocks(const void *data, size_t block_size, size_t n, uint32_t *out);

/* Monotonic clock in nanoseconds. */
uint64_t fm_now_ns(void);

/*
 * Parse a size such as "512", "4k", "64M", "1G", "2T" (binary units, an
 * optional trailing "B" or "iB").  Returns 0 and sets *ret_bytes, or
 * -EINVAL (not a size) / -ERANGE (overflows 64 bits).
 */
int fm_parse_size(const char *s, uint64_t *ret_bytes);

/* Format @bytes as "1.5 GiB" into @buf (at least 32 bytes); returns @buf. */
char *fm_format_size(uint64_t bytes, char *buf, size_t len);

/*
 * Byte ranges of an iovec array, a range past its end cut short.
 * fm_iov_slice(): the elements of bytes [@off, @off + @len) of @iov into
 * @out (NULL: count only); returns how many.
 * fm_iov_fill(): copy @len bytes of @src (NULL: zeroes) into bytes
 * [@off, @off + @len) of @iov's memory.
 * fm_iov_gather(): the reverse, bytes [@off, @off + @len) of @iov's memory
 * into @dst (as many as the range has).
 */
unsigned fm_iov_slice(const struct iovec *iov, unsigned iovcnt, size_t off, size_t len,
		      struct iovec *out);
void fm_iov_fill(const struct iovec *iov, unsigned iovcnt, size_t off, const void *src,
		 size_t len);
void fm_iov_gather(const struct iovec *iov, unsigned iovcnt, size_t off, void *dst, size_t len);

/*
 * Start a background thread running @fn(@arg), named @name (NULL: unnamed;
 * the kernel keeps 15 characters), with the asynchronous signals blocked
 * from its first instruction.  The daemon decides which thread takes
 * SIGINT/SIGTERM/SIGHUP: the front's first event loop, whose blocking
 * read() the signal must interrupt (src/front/front.c).  Threads that want
 * a signal unblock it themselves.  Returns 0 or -errno (pthread_create's).
 */
int fm_thread_start(pthread_t *thread, const char *name, void *(*fn)(void *), void *arg);
/* @set = every signal but those a fault raises (SIGBUS, SIGSEGV, SIGFPE,
 * SIGILL, SIGTRAP, SIGSYS), which must never be blocked: the kernel kills
 * a thread that faults with its signal blocked rather than run the handler
 * (dmio's copies into mapped legs catch SIGBUS, src/dmio/map.c). */
void fm_signals_async(sigset_t *set);

/*
 * fm_map_huge(): @len bytes (rounded up to FM_HUGE_PAGE_SIZE) of private
 * anonymous memory, aligned to FM_HUGE_PAGE_SIZE and asked to be
 * transparent huge pages (MADV_HUGEPAGE; THP is "madvise" on Debian), not
 * yet touched; NULL when mmap fails.  Where THP is off, or the kernel has no
 * huge page free at the first touch, it is small pages.  Physically
 * contiguous memory matters for direct I/O: a 1 MiB read into one huge page
 * is one segment for the disk, into small pages up to 256.
 * fm_unmap_huge(): unmap what fm_map_huge(@len) returned (NULL: nothing).
 */
void *fm_map_huge(size_t len);
void fm_unmap_huge(void *p, size_t len);

/*
 * fm_map_aligned(): @len bytes (a multiple of FM_HUGE_PAGE_SIZE) of private
 * anonymous memory aligned to FM_HUGE_PAGE_SIZE, mmap()ed with @flags added
 * (e.g. MAP_NORESERVE), no advice given; NULL when mmap fails.  Undone by
 * munmap(p, len).
 */
void *fm_map_aligned(size_t len, int flags);

#endif /* FUSEMIRROR_COMMON_H */
