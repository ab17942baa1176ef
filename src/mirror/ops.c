/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Online administration of an assembled array: fail, remove, add, replace,
 * scrub, fault injection; and its status.
 */
#include <errno.h>
#include <string.h>

#include "mirror_i.h"

static int not_yet(GError **err, const char *what)
{
	g_set_error(err, FM_MIRROR_ERROR, ENOSYS, "%s: not implemented yet", what);
	return -ENOSYS;
}

int mirror_fail_leg(struct mirror *m, const char *leg, GError **err)
{
	(void)m; (void)leg;
	return not_yet(err, "fail");
}

int mirror_remove_leg(struct mirror *m, const char *leg, GError **err)
{
	(void)m; (void)leg;
	return not_yet(err, "remove");
}

int mirror_add_leg(struct mirror *m, const char *path, bool force, GError **err)
{
	(void)m; (void)path; (void)force;
	return not_yet(err, "add");
}

int mirror_replace_leg(struct mirror *m, const char *old, const char *new_path,
		       bool force, GError **err)
{
	(void)m; (void)old; (void)new_path; (void)force;
	return not_yet(err, "replace");
}

int mirror_scrub(struct mirror *m, bool repair, GError **err)
{
	(void)m; (void)repair;
	return not_yet(err, "scrub");
}

int mirror_scrub_cancel(struct mirror *m, GError **err)
{
	(void)m;
	return not_yet(err, "scrub cancel");
}

int mirror_inject(struct mirror *m, const char *leg, const struct dmio_fault *fault,
		  GError **err)
{
	(void)m; (void)leg; (void)fault;
	return not_yet(err, "inject");
}

void mirror_get_sb(struct mirror *m, struct fm_sb *ret)
{
	*ret = m->legs[0].sb;
}

static const char *const action_names[] = {
	[MIRROR_SYNC_IDLE] = "idle",
	[MIRROR_SYNC_RESYNC] = "resync",
	[MIRROR_SYNC_RECOVER] = "recover",
	[MIRROR_SYNC_CHECK] = "check",
	[MIRROR_SYNC_REPAIR] = "repair",
};

const char *mirror_sync_action_name(enum mirror_sync_action a)
{
	return (unsigned)a < FM_ARRAY_SIZE(action_names) ? action_names[a] : "?";
}

void mirror_get_status(struct mirror *m, struct mirror_status *s)
{
	memset(s, 0, sizeof(*s));
	s->events = m->legs[0].sb.events;
	s->nr_slots = m->nr_legs;
	for (unsigned i = 0; i < m->nr_legs; i++) {
		s->nr_in_sync += m->legs[i].state == FM_LEG_IN_SYNC;
		s->nr_faulty += m->legs[i].state == FM_LEG_FAULTY;
		s->nr_rebuilding += m->legs[i].state == FM_LEG_REBUILDING;
	}
	s->degraded = s->nr_in_sync < s->nr_slots;
	s->failed = s->nr_in_sync == 0;
	s->state = m->readonly ? "read-only" : s->failed ? "failed" :
		   s->degraded ? "degraded" : "active";
	s->region_size = m->legs[0].sb.region_size;
	s->nr_regions = fm_sb_nr_regions(&m->legs[0].sb);
}
