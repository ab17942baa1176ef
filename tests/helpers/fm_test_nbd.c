/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * NBD servers for the unit tests of remote devices and remote legs
 * (fm_test.h, "NBD servers"): nbdkit on a unix socket or loopback TCP, or
 * qemu-nbd on a unix socket, started in the foreground, stopped (SIGSTOP)
 * and killed.
 */
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "fm_test.h"

bool fm_test_nbd_listens(const struct fm_test_nbd *s)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct sockaddr_in si = { .sin_family = AF_INET };
	int fd = socket(s->port ? AF_INET : AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	g_strlcpy(sa.sun_path, s->sock, sizeof(sa.sun_path));
	si.sin_port = htons((uint16_t)s->port);
	si.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = fd >= 0 && (s->port ? connect(fd, (struct sockaddr *)&si, sizeof(si)) :
				   connect(fd, (struct sockaddr *)&sa, sizeof(sa))) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

void fm_test_nbd_start(struct fm_test_nbd *s, const char *first, ...)
{
	g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
	g_autoptr(GError) err = NULL;
	const char *a;
	va_list ap;

	ck_assert_msg(s->pid <= 0, "an NBD server (pid %d) runs already", s->pid);
	if (!s->dir) {
		s->dir = fm_test_mkdtemp(NULL, "nbd");
		s->sock = g_build_filename(s->dir, "sock", NULL);
		if (s->port)
			s->uri = g_strdup_printf("nbd://127.0.0.1:%d/", s->port);
		else
			s->uri = g_strdup_printf("nbd+unix:///?socket=%s", s->sock);
	}
	unlink(s->sock); /* a killed server's */
	if (!strcmp(first, "qemu-nbd")) {
		/* -t: stay for the next client (fm_test_nbd_listens() is one). */
		g_ptr_array_add(argv, g_strdup("qemu-nbd"));
		g_ptr_array_add(argv, g_strdup("-f"));
		g_ptr_array_add(argv, g_strdup("raw"));
		g_ptr_array_add(argv, g_strdup("-t"));
		g_ptr_array_add(argv, g_strdup("--shared=4"));
		g_ptr_array_add(argv, g_strdup("-k"));
		g_ptr_array_add(argv, g_strdup(s->sock));
	} else {
		g_ptr_array_add(argv, g_strdup("nbdkit"));
		g_ptr_array_add(argv, g_strdup("-f"));
		g_ptr_array_add(argv, g_strdup("--exit-with-parent"));
		if (s->port) {
			g_ptr_array_add(argv, g_strdup("-i"));
			g_ptr_array_add(argv, g_strdup("127.0.0.1"));
			g_ptr_array_add(argv, g_strdup("-p"));
			g_ptr_array_add(argv, g_strdup_printf("%d", s->port));
		} else {
			g_ptr_array_add(argv, g_strdup("-U"));
			g_ptr_array_add(argv, g_strdup(s->sock));
		}
		g_ptr_array_add(argv, g_strdup(first));
	}
	va_start(ap, first);
	for (a = va_arg(ap, const char *); a; a = va_arg(ap, const char *))
		g_ptr_array_add(argv, g_strdup(a));
	va_end(ap);
	g_ptr_array_add(argv, NULL);
	ck_assert_msg(g_spawn_async(NULL, (char **)argv->pdata, NULL,
				    G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD,
				    NULL, NULL, &s->pid, &err),
		      "cannot start nbdkit: %s", err ? err->message : "?");
	for (int i = 0; i < 1000 && !fm_test_nbd_listens(s); i++)
		g_usleep(10000);
	ck_assert_msg(fm_test_nbd_listens(s), "nbdkit does not listen on %s", s->sock);
}

void fm_test_nbd_pause(struct fm_test_nbd *s)
{
	g_autofree char *dir = g_strdup_printf("/proc/%d/task", s->pid);

	ck_assert_int_eq(kill(s->pid, SIGSTOP), 0);
	for (int i = 0; i < 500; i++) {
		g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
		const char *t;
		bool all = d != NULL;

		while (d && (t = g_dir_read_name(d))) {
			g_autofree char *path = g_strdup_printf("%s/%s/stat", dir, t);
			g_autofree char *stat = NULL;
			const char *p;

			if (!g_file_get_contents(path, &stat, NULL, NULL))
				continue;
			p = strrchr(stat, ')');
			if (!p || (p[2] != 'T' && p[2] != 't'))
				all = false;
		}
		if (all)
			return;
		g_usleep(10000);
	}
	ck_abort_msg("nbdkit (pid %d) did not stop", s->pid);
}

void fm_test_nbd_kill(struct fm_test_nbd *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGCONT);
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
		s->pid = 0;
	}
}

void fm_test_nbd_stop(struct fm_test_nbd *s)
{
	fm_test_nbd_kill(s);
	if (s->dir)
		fm_test_rm_rf(s->dir);
	g_clear_pointer(&s->dir, g_free);
	g_clear_pointer(&s->sock, g_free);
	g_clear_pointer(&s->uri, g_free);
	s->port = 0;
}
