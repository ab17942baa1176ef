/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Background threads: started with the asynchronous signals blocked, and
 * named. */
#include <errno.h>
#include <signal.h>

#include "fusemirror/common.h"

void fm_signals_async(sigset_t *set)
{
	/* What a fault raises is delivered to the faulting thread whatever
	 * its mask: blocked, the kernel resets the action to the default
	 * (the process dies) instead of running the handler. */
	static const int faults[] = { SIGBUS, SIGSEGV, SIGFPE, SIGILL, SIGTRAP, SIGSYS };

	sigfillset(set);
	for (unsigned i = 0; i < FM_ARRAY_SIZE(faults); i++)
		sigdelset(set, faults[i]);
}

int fm_thread_start(pthread_t *thread, const char *name, void *(*fn)(void *), void *arg)
{
	sigset_t async, old;
	int r;

	/* The new thread inherits the mask in force at pthread_create(),
	 * so it never runs a moment with them open. */
	fm_signals_async(&async);
	pthread_sigmask(SIG_BLOCK, &async, &old);
	r = pthread_create(thread, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r)
		return -r;
	if (name)
		pthread_setname_np(*thread, name);
	return 0;
}
