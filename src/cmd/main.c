/*
 * main.c - the tern command and the parent process.
 *
 *   tern serve [-c FILE]         run the MTA in the foreground
 *   tern check-config [-c FILE]  report every configuration error
 *   tern config-doc              print the configuration reference
 *   tern queue list|show ID|flush [ID]|delete ID|hold ID|release ID
 *              [--json] [-c FILE]  ask the running queue (queue_control.h)
 *   tern sendmail [-t] [-i] [-f ADDR] [-F NAME] [-C FILE] [ADDRESS...]
 *              (also argv[0] "sendmail") submit stdin over submit_socket
 *   tern version
 *
 * The parent reads the configuration and binds the listening sockets
 * (with the privileges it was started with), then forks the workers and
 * supervises them, restarting one that dies. The workers and the
 * channels between them are two tables (roles[] and chans[] below):
 *
 *   queue  owns the spool and local delivery; runs as user_queue
 *   smtp   speaks SMTP to the network; runs as user_smtp, chrooted
 *   relay  delivers to other servers; runs as user_relay, chrooted
 *
 * The parent never reads from the network. The workers drop root before
 * they read a byte from a peer (issue 2, item 4; docs/architecture.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf/config.h"
#include "dns/dns.h"
#include "lib/log.h"
#include "lib/proctitle.h"
#include "conf/passwd.h"
#include "proto/ctl.h"
#include "queue/queue.h"
#include "queue/queue_control.h"
#include "relay/relay.h"
#include "relay/route.h"
#include "cmd/sendmail.h"
#include "smtpd/smtp_server.h"
#include "lib/tls.h"
#include "lib/util.h"

#define TERN_VERSION "0.1.0"
#define RESTART_WINDOW_SECS 60
#define RESTART_MAX 10        /* per window, per worker, then give up */
#define SHUTDOWN_GRACE_SECS 10

/* The workers, in the order they start (roles[] below). */
enum role_id { ROLE_QUEUE, ROLE_SMTP, ROLE_RELAY, ROLE_COUNT };
/* The data channels between them (chans[] below). */
enum chan_id { CHAN_SUBMIT, CHAN_RELAY, CHAN_COUNT };

struct parent;

struct worker {
	struct parent *p;
	enum role_id role;
	pid_t pid;
	struct ctl *ctl;          /* parent's end of the control channel */
	struct event *restart_ev;
	time_t restarts[RESTART_MAX];
	size_t nrestarts;
};

struct parent {
	struct config *cfg;
	struct event_base *base;
	int listen_fds[CONFIG_MAX_LISTENERS];
	size_t nlisten;
	int submit_fd;            /* submit_socket, or -1 (sendmail.h) */
	ino_t submit_ino;         /* to remove only our own socket at exit */
	bool root;
	uid_t uid[ROLE_COUNT];    /* each role's user, when root */
	gid_t gid[ROLE_COUNT];
	struct worker w[ROLE_COUNT];
	bool stopping;
	int exit_status;
};

static void
usage(void)
{
	fprintf(stderr,
	    "usage: tern serve [-c FILE]\n"
	    "       tern check-config [-c FILE]\n"
	    "       tern config-doc\n"
	    "       tern passwd USER [FILE] [-c FILE]\n"
	    "       tern queue list|show ID|flush [ID]|delete ID|hold ID|release ID [--json] [-c FILE]\n"
	    "       tern sendmail [-t] [-i] [-f SENDER] [-F NAME] [-C FILE] [ADDRESS...]\n"
	    "       tern version\n");
	exit(64);
}

static struct config *
load_config(const char *path)
{
	char *errors = NULL;
	struct config *cfg = config_load(path, &errors);

	if (cfg == NULL) {
		fputs(errors ? errors : "configuration error\n", stderr);
		free(errors);
		return NULL;
	}
	free(errors);
	return cfg;
}

/* ------------------------------------------------------------------ */
/* privileges */

static void
lookup_user(const char *name, uid_t *uid, gid_t *gid)
{
	struct passwd *pw = getpwnam(name);

	if (pw == NULL)
		fatal("user \"%s\" does not exist (create it: useradd --system "
		    "--no-create-home --shell /usr/sbin/nologin %s)", name, name);
	if (pw->pw_uid == 0)
		fatal("user \"%s\" is root: tern's workers must not run as root", name);
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
}

/* Irrevocably become uid/gid (no supplementary groups). */
static void
drop_privileges(uid_t uid, gid_t gid)
{
	if (setgroups(1, &gid) == -1 || setresgid(gid, gid, gid) == -1 ||
	    setresuid(uid, uid, uid) == -1)
		fatal("cannot drop privileges: %s", strerror(errno));
	if (setuid(0) != -1)
		fatal("privileges could be regained; refusing to run");
}

/* After the drop: no setuid binaries can raise us, die with the parent. */
static void
harden_worker(pid_t parent)
{
	(void)prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	(void)prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
	if (getppid() != parent)
		_exit(0);   /* the parent died before we set PDEATHSIG */
}

/* ------------------------------------------------------------------ */
/* listening sockets */

static int
bind_listener(const struct config_listener *l)
{
	int one = 1;
	int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd == -1)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (l->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) == -1 ||
	    listen(fd, 512) == -1) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/*
 * The local submission socket (submit_socket; tern sendmail connects to
 * it). A stale socket is replaced, anything else at the path is left
 * alone, and a socket another tern still answers on is never stolen.
 * Mode 0666 (set by the umask at bind(), never by a chmod of the path):
 * every local user may submit; who did is known from SO_PEERCRED in the
 * smtp process. Returns the listening fd.
 */
static int
bind_submit_socket(const char *path, const char *group, bool root, ino_t *ino)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	char *dir, *slash;
	mode_t old_umask;
	int fd, rc, e;

	if (strlen(path) >= sizeof(sun.sun_path))
		fatal("submit_socket %s: path too long", path);
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			fatal("submit_socket %s exists and is not a socket; "
			    "refusing to replace it", path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd != -1 && connect(fd, (struct sockaddr *)&sun,
		    sizeof(sun)) == 0)
			fatal("submit_socket %s: another tern is running "
			    "(it accepts connections there)", path);
		if (fd != -1)
			close(fd);
		if (unlink(path) == -1)
			fatal("cannot remove stale submit_socket %s: %s", path,
			    strerror(errno));
	}
	dir = xstrdup(path);
	if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		if (util_mkdirs(dir, 0755) == -1)
			fatal("cannot create %s for submit_socket: %s", dir,
			    strerror(errno));
	}
	free(dir);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		fatal("cannot listen on submit_socket %s: %s", path,
		    strerror(errno));
	/* bind() creates the file with mode 0777 & ~umask: 0666 here. No
	 * chmod(path) afterwards, which would follow whatever the path has
	 * become by then (a symlink swapped in, if the directory lets
	 * someone else write to it). */
	/* With submit_group: 0660, then that group (lchown never follows a
	 * symlink); until the lchown only root may connect. */
	old_umask = umask(group != NULL && root ? 0117 : 0111);
	rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	e = errno;
	umask(old_umask);
	if (rc == -1 || listen(fd, 128) == -1)
		fatal("cannot listen on submit_socket %s: %s", path,
		    strerror(rc == -1 ? e : errno));
	if (lstat(path, &st) == -1 || !S_ISSOCK(st.st_mode))
		fatal("submit_socket %s: not our socket after bind", path);
	if (group != NULL && root) {
		struct group *gr = getgrnam(group);

		if (gr == NULL)
			fatal("submit_group %s: no such group", group);
		if (lchown(path, 0, gr->gr_gid) == -1)
			fatal("submit_socket %s: cannot give it to group %s: %s",
			    path, group, strerror(errno));
	}
	*ino = st.st_ino;
	return fd;
}

/* ------------------------------------------------------------------ */
/* workers: the roles and the channels between them */

/* What the smtp role prepares before it gives up root. */
struct smtp_prep {
	struct event_base *base;
	struct dns *dns;
	SSL_CTX *tls;
};

static void *
queue_prepare(struct parent *p)
{
	char err[256];
	struct queue *q;

	/* Creates and opens the spool and the Maildir bases while root. */
	q = queue_new(p->cfg, p->root ? p->uid[ROLE_QUEUE] : (uid_t)-1,
	    p->root ? p->gid[ROLE_QUEUE] : (gid_t)-1, err, sizeof(err));
	if (q == NULL)
		fatal("queue: %s", err);
	return q;
}

static int
queue_main(struct parent *p, void *state, int ctl, const int chan[])
{
	struct queue *q = state;
	int status = queue_run(q, ctl, chan[CHAN_SUBMIT], chan[CHAN_RELAY]);

	queue_free(&q);
	return status;
}

static void *
smtp_prepare(struct parent *p)
{
	const struct config *cfg = p->cfg;
	struct smtp_prep *s = xcalloc(1, sizeof(*s));
	char err[256];
	struct dns_options dopt = {
		.resolver = cfg->resolver,
		.self_name = cfg->hostname,
		.allow_loopback = cfg->allow_loopback_mx,
		/* a slow resolver must not stall RCPT: after this the
		 * recipient is accepted and the queue retries */
		.timeout_ms = 3000,
	};

	s->base = event_base_new();
	if (s->base == NULL)
		fatal("smtp: event_base_new failed");
	/* Before chroot: the resolver reads /etc/resolv.conf now. */
	s->dns = dns_new(s->base, &dopt, err, sizeof(err));
	if (s->dns == NULL)
		log_warn("smtp event=no-dns reason=\"%s\" (no RCPT-time domain check)", err);
	/* The key is read now, as root: once the session code runs this
	 * process can no longer open it (docs/security.md). */
	if (cfg->tls_certificate != NULL) {
		s->tls = tls_server_ctx_load(cfg->tls_certificate, cfg->tls_key,
		    tls_min_version(cfg->tls_min_version == CONFIG_TLS_1_3), err,
		    sizeof(err));
		if (s->tls == NULL)
			log_err("smtp event=tls-unavailable reason=\"%s\"", err);
	}
	return s;
}

static int
smtp_main(struct parent *p, void *state, int ctl, const int chan[])
{
	struct smtp_prep *s = state;
	int status = smtp_server_run(p->cfg, s->base, s->dns, s->tls,
	    p->listen_fds, p->nlisten, p->submit_fd, chan[CHAN_SUBMIT], ctl);

	free(s);
	return status;
}

static void *
relay_prepare(struct parent *p)
{
	char err[256];
	struct relay *r = relay_new(p->cfg, err, sizeof(err));

	/* The resolver's configuration and the CA file are read now,
	 * before the chroot hides them. */
	if (r == NULL)
		fatal("relay: %s", err);
	return r;
}

static int
relay_main(struct parent *p, void *state, int ctl, const int chan[])
{
	struct relay *r = state;
	int status = relay_run(r, ctl, chan[CHAN_RELAY]);

	relay_free(&r);
	return status;
}

static const struct role {
	const char *name;          /* log tag; process title "tern: NAME" */
	size_t user;               /* offsetof(struct config, user_NAME) */
	bool chroot;               /* into chroot_dir, when started as root */
	bool listeners;            /* keeps the listening sockets */
	/* With the start-up privileges: what needs them. */
	void *(*prepare)(struct parent *p);
	/* Confined: the process itself (ctl and chan[] its channel ends,
	 * -1 for a channel it is not on). Returns the exit status. */
	int (*main)(struct parent *p, void *state, int ctl, const int chan[]);
} roles[ROLE_COUNT] = {
	[ROLE_QUEUE] = { "queue", offsetof(struct config, user_queue), false,
	    false, queue_prepare, queue_main },
	[ROLE_SMTP] = { "smtp", offsetof(struct config, user_smtp), true,
	    true, smtp_prepare, smtp_main },
	[ROLE_RELAY] = { "relay", offsetof(struct config, user_relay), true,
	    false, relay_prepare, relay_main },
};

/* A channel between two roles; a restarted role gets a new one, and its
 * peer the other end in the control frame named here. */
static const struct chan_def {
	enum role_id end[2];
	enum ctl_type handover[2]; /* how end[i] is handed a new end */
} chans[CHAN_COUNT] = {
	[CHAN_SUBMIT] = { { ROLE_SMTP, ROLE_QUEUE }, { CTL_PEER_FD, CTL_PEER_FD } },
	[CHAN_RELAY] = { { ROLE_QUEUE, ROLE_RELAY }, { CTL_RELAY_FD, CTL_PEER_FD } },
};

static const char *
role_user(const struct parent *p, enum role_id k)
{
	return *(char *const *)(const void *)((const char *)p->cfg +
	    roles[k].user);
}

/* Chroot (if the role wants it) and drop to the role's user: only when
 * started as root. */
static void
confine(struct parent *p, enum role_id k, pid_t parent_pid)
{
	if (p->root) {
		if (roles[k].chroot && (chroot(p->cfg->chroot_dir) == -1 ||
		    chdir("/") == -1))
			fatal("chroot %s: %s", p->cfg->chroot_dir, strerror(errno));
		drop_privileges(p->uid[k], p->gid[k]);
	}
	harden_worker(parent_pid);
}

static void parent_ready(void *arg);
static void parent_lost(void *arg, enum ipc_end end, const char *why);

static const struct ctl_ops parent_ctl_ops = {
	.ready = parent_ready,
	.lost = parent_lost,
};

/* The child of spawn(): let go of what is the parent's, become role k. */
static _Noreturn void
child(struct parent *p, enum role_id k, int ctl, int pairs[][2],
    pid_t parent_pid)
{
	int mine[CHAN_COUNT];
	void *state;

	/* Only its own ends: holding a peer's end would hide the peer's
	 * death (no EOF). */
	for (int c = 0; c < CHAN_COUNT; c++) {
		mine[c] = -1;
		for (int i = 0; i < 2; i++) {
			if (pairs[c][i] == -1)
				continue;
			if (chans[c].end[i] == k)
				mine[c] = pairs[c][i];
			else
				close(pairs[c][i]);
		}
	}
	/* The parent's loop (and its signal handling) is not ours; drop it
	 * so the worker's own event base can take the signals. epoll is
	 * shared across fork: reinit first, or freeing would unregister
	 * the parent's own descriptors. */
	(void)event_reinit(p->base);
	for (int w = 0; w < ROLE_COUNT; w++) {
		ctl_free(&p->w[w].ctl);
		if (p->w[w].restart_ev != NULL)
			event_free(p->w[w].restart_ev);
		p->w[w].restart_ev = NULL;
	}
	event_base_free(p->base);
	p->base = NULL;
	signal(SIGCHLD, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	if (!roles[k].listeners) {
		for (size_t i = 0; i < p->nlisten; i++)
			close(p->listen_fds[i]);
		if (p->submit_fd != -1)
			close(p->submit_fd);
	}
	log_set_role(roles[k].name);
	proctitle_set("tern: %s", roles[k].name);
	state = roles[k].prepare(p);
	confine(p, k, parent_pid);
	int status = roles[k].main(p, state, ctl, mine);
	config_free(&p->cfg);
	_exit(status);
}

/*
 * Fork role k with a new control channel. pairs[c] are the two ends of
 * channel c (-1, -1 where the parent makes none now): the child keeps
 * its own ends and closes the others; the parent keeps them all.
 */
static void
spawn(struct parent *p, enum role_id k, int pairs[][2])
{
	struct worker *w = &p->w[k];
	pid_t parent_pid = getpid();
	int ctl[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) == -1)
		fatal("socketpair: %s", strerror(errno));
	pid = fork();
	if (pid == -1)
		fatal("fork: %s", strerror(errno));
	if (pid == 0) {
		close(ctl[0]);
		child(p, k, ctl[1], pairs, parent_pid);
	}
	close(ctl[1]);
	w->pid = pid;
	w->ctl = ctl_open(p->base, ctl[0], CTL_PARENT, &parent_ctl_ops, w);
}

static void
new_pair(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		fatal("socketpair: %s", strerror(errno));
}

/* Start every worker, with every channel. */
static void
start_all(struct parent *p)
{
	int pairs[CHAN_COUNT][2];

	for (int c = 0; c < CHAN_COUNT; c++)
		new_pair(pairs[c]);
	for (int k = 0; k < ROLE_COUNT; k++)
		spawn(p, (enum role_id)k, pairs);
	for (int c = 0; c < CHAN_COUNT; c++)
		for (int i = 0; i < 2; i++)
			close(pairs[c][i]);
}

/* Restart role k with new channels, and hand each survivor its end. */
static void
restart_worker(struct parent *p, enum role_id k)
{
	struct worker *w = &p->w[k];
	int pairs[CHAN_COUNT][2];

	ctl_free(&w->ctl);
	for (int c = 0; c < CHAN_COUNT; c++) {
		pairs[c][0] = pairs[c][1] = -1;
		if (chans[c].end[0] == k || chans[c].end[1] == k)
			new_pair(pairs[c]);
	}
	spawn(p, k, pairs);
	for (int c = 0; c < CHAN_COUNT; c++)
		for (int i = 0; i < 2; i++) {
			struct worker *peer = &p->w[chans[c].end[i]];

			if (pairs[c][i] == -1)
				continue;
			if (peer == w || peer->pid <= 0) {
				close(pairs[c][i]);
			} else if (ctl_send(peer->ctl, chans[c].handover[i],
			    pairs[c][i]) == -1) {
				log_err("parent: cannot hand the new channel to %s",
				    roles[peer->role].name);
			}
		}
	log_info("parent event=restarted worker=%s pid=%ld", roles[k].name,
	    (long)w->pid);
}

static void
parent_ready(void *arg)
{
	struct worker *w = arg;

	log_debug("parent event=worker-ready worker=%s pid=%ld",
	    roles[w->role].name, (long)w->pid);
}

/* A worker's control channel closed: it is exiting (SIGCHLD follows),
 * or it broke the protocol. */
static void
parent_lost(void *arg, enum ipc_end end, const char *why)
{
	struct worker *w = arg;

	if (end != IPC_EOF)
		log_err("parent event=control-error worker=%s reason=\"%s\"",
		    roles[w->role].name, why);
	ctl_free(&w->ctl);
}

static void
restart_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;

	if (!w->p->stopping && w->pid == 0)
		restart_worker(w->p, w->role);
}

static void
stop_all(struct parent *p, int status)
{
	if (p->stopping)
		return;
	p->stopping = true;
	p->exit_status = status;
	for (int k = 0; k < ROLE_COUNT; k++) {
		if (p->w[k].pid > 0) {
			(void)ctl_send(p->w[k].ctl, CTL_SHUTDOWN, -1);
			kill(p->w[k].pid, SIGTERM);
		}
	}
}

static void
worker_died(struct parent *p, enum role_id k, int status)
{
	struct worker *w = &p->w[k];
	const char *name = roles[k].name;
	time_t now = time(NULL);
	size_t recent = 0;

	if (WIFSIGNALED(status) && !(p->stopping && WTERMSIG(status) == SIGTERM))
		log_err("parent event=worker-died worker=%s pid=%ld signal=%d",
		    name, (long)w->pid, WTERMSIG(status));
	else if (WIFSIGNALED(status))
		log_info("parent event=worker-exited worker=%s pid=%ld signal=%d",
		    name, (long)w->pid, WTERMSIG(status));   /* our SIGTERM */
	else
		log_info("parent event=worker-exited worker=%s pid=%ld status=%d",
		    name, (long)w->pid, WEXITSTATUS(status));
	w->pid = 0;
	ctl_free(&w->ctl);
	if (p->stopping)
		return;
	/* A worker that keeps dying is a configuration or environment
	 * problem: stop rather than spin. */
	for (size_t i = 0; i < RESTART_MAX; i++)
		if (w->restarts[i] != 0 && now - w->restarts[i] < RESTART_WINDOW_SECS)
			recent++;
	if (recent >= RESTART_MAX) {
		log_err("parent: %s died %d times in %d s; giving up", name,
		    RESTART_MAX, RESTART_WINDOW_SECS);
		stop_all(p, 1);
		return;
	}
	w->restarts[w->nrestarts++ % RESTART_MAX] = now;
	/* A short pause so a crash loop cannot eat the machine. */
	struct timeval tv = { .tv_sec = recent > 2 ? 2 : 0, .tv_usec = 200000 };
	event_add(w->restart_ev, &tv);
}

static bool
all_stopped(const struct parent *p)
{
	for (int k = 0; k < ROLE_COUNT; k++)
		if (p->w[k].pid > 0)
			return false;
	return true;
}

static void
sigchld_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct parent *p = arg;
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (int k = 0; k < ROLE_COUNT; k++)
			if (p->w[k].pid == pid)
				worker_died(p, (enum role_id)k, status);
	}
	if (p->stopping && all_stopped(p))
		event_base_loopbreak(p->base);
}

static void
sigterm_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct parent *p = arg;

	log_info("parent event=shutdown signal=%d", (int)sig);
	stop_all(p, 0);
	if (all_stopped(p))
		event_base_loopbreak(p->base);
}

/* SIGHUP, first: log_file is opened again by path (after logrotate moved
 * it) and every process switches to the new file. */
static void
log_reopen(struct parent *p)
{
	int fd;

	if (p->cfg->log_file == NULL)
		return;
	fd = open(p->cfg->log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
	    0640);
	if (fd == -1) {
		log_err("parent event=sighup action=log-reopen result=failed "
		    "file=%s reason=\"%s\"", p->cfg->log_file, strerror(errno));
		return;
	}
	log_reopen_fd(fd);
	for (int k = 0; k < ROLE_COUNT; k++) {
		int dfd;

		if (p->w[k].pid <= 0)
			continue;
		/* Each channel owns (and closes) the copy it sends. */
		dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (dfd == -1 || ctl_send(p->w[k].ctl, CTL_LOG_FD, dfd) == -1)
			log_err("parent event=sighup action=log-reopen "
			    "result=failed worker=%s", roles[k].name);
	}
	close(fd);
	log_info("parent event=sighup action=log-reopen result=ok file=%s",
	    p->cfg->log_file);
}

/*
 * SIGHUP: log_file is reopened, and the certificate and key are read
 * again (by the parent, as root) and handed to the smtp process as a
 * memfd; new connections use them, open ones keep theirs. A bad pair is
 * logged and the old one stays. The rest of the configuration takes a
 * restart (docs/configuration.md); a full reload is issue 13's.
 */
static void
sighup_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct parent *p = arg;
	const struct config *cfg = p->cfg;
	char err[256];
	SSL_CTX *check;
	int fd;

	log_reopen(p);
	if (cfg->tls_certificate == NULL) {
		log_info("parent event=sighup action=none reason=\"no "
		    "tls_certificate; configuration changes need a restart\"");
		return;
	}
	check = tls_server_ctx_load(cfg->tls_certificate, cfg->tls_key,
	    tls_min_version(cfg->tls_min_version == CONFIG_TLS_1_3), err,
	    sizeof(err));
	if (check == NULL) {
		log_err("parent event=sighup action=tls-reload result=failed "
		    "reason=\"%s\" (the current certificate stays)", err);
		return;
	}
	SSL_CTX_free(check);
	fd = tls_bundle_fd(cfg->tls_certificate, cfg->tls_key, err, sizeof(err));
	if (fd == -1) {
		log_err("parent event=sighup action=tls-reload result=failed "
		    "reason=\"%s\"", err);
		return;
	}
	/* The channel owns fd from here. */
	if (p->w[ROLE_SMTP].pid <= 0 ||
	    ctl_send(p->w[ROLE_SMTP].ctl, CTL_TLS_FD, fd) == -1) {
		if (p->w[ROLE_SMTP].pid <= 0)
			close(fd);
		log_err("parent event=sighup action=tls-reload result=failed "
		    "reason=\"cannot reach the smtp process\"");
	} else {
		log_info("parent event=sighup action=tls-reload result=sent");
	}
}

static void
print_banner(const struct parent *p)
{
	const struct config *cfg = p->cfg;

	for (size_t i = 0; i < cfg->nlisteners; i++)
		log_info("parent event=listening address=%s", cfg->listeners[i].text);
	if (cfg->submit_socket != NULL)
		log_info("parent event=listening submit_socket=%s", cfg->submit_socket);
	log_info("parent event=started version=%s spool=%s user=%s", TERN_VERSION,
	    cfg->spool_dir, p->root ? "root (workers drop privileges)" : "unprivileged");
	fprintf(stderr, "tern %s: listening on", TERN_VERSION);
	for (size_t i = 0; i < cfg->nlisteners; i++)
		fprintf(stderr, " %s", cfg->listeners[i].text);
	fprintf(stderr, "; spool %s\n", cfg->spool_dir);
	for (size_t i = 0; i < cfg->ndomains; i++)
		fprintf(stderr, "tern: mail for <user>@%s is delivered to the Maildir %s "
		    "(new messages in its new/; %%d = domain, %%u = user)\n",
		    cfg->domains[i].name, cfg->domains[i].maildir);
}

static int
cmd_serve(const char *path)
{
	struct parent p = { 0 };
	struct event *ev_chld, *ev_term, *ev_int, *ev_hup;

	log_init("parent");
	proctitle_set("tern: parent");
	p.cfg = load_config(path);
	if (p.cfg == NULL)
		return 78;   /* EX_CONFIG */
	p.root = geteuid() == 0;
	if (p.cfg->tls_certificate != NULL) {
		/* A bad certificate or key is found now, not at the first
		 * STARTTLS. */
		char err[256];
		SSL_CTX *check = tls_server_ctx_load(p.cfg->tls_certificate,
		    p.cfg->tls_key, tls_min_version(
		    p.cfg->tls_min_version == CONFIG_TLS_1_3), err, sizeof(err));
		if (check == NULL)
			fatal("tls_certificate/tls_key: %s", err);
		SSL_CTX_free(check);
	}
	for (int k = 0; k < ROLE_COUNT; k++) {
		p.w[k].p = &p;
		p.w[k].role = (enum role_id)k;
	}

	if (p.cfg->log_file != NULL) {
		int fd = open(p.cfg->log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (fd == -1)
			fatal("cannot open log_file %s: %s", p.cfg->log_file, strerror(errno));
		log_set_file_fd(fd);
	}
	for (size_t i = 0; i < p.cfg->nlisteners; i++) {
		int fd = bind_listener(&p.cfg->listeners[i]);
		if (fd == -1)
			fatal("cannot listen on %s: %s", p.cfg->listeners[i].text,
			    strerror(errno));
		p.listen_fds[p.nlisten++] = fd;
	}
	p.submit_fd = -1;
	if (p.cfg->submit_socket != NULL)
		p.submit_fd = bind_submit_socket(p.cfg->submit_socket,
		    p.cfg->submit_group, p.root, &p.submit_ino);
	if (p.root) {
		for (int k = 0; k < ROLE_COUNT; k++)
			lookup_user(role_user(&p, (enum role_id)k), &p.uid[k],
			    &p.gid[k]);
		if (p.uid[ROLE_SMTP] == p.uid[ROLE_QUEUE])
			log_warn("parent: user_smtp and user_queue are the same user; "
			    "the smtp process could then signal or trace the queue");
		if (util_mkdirs(p.cfg->chroot_dir, 0755) == -1)
			fatal("cannot create chroot %s: %s", p.cfg->chroot_dir, strerror(errno));
		if (chown(p.cfg->chroot_dir, 0, 0) == -1 || chmod(p.cfg->chroot_dir, 0755) == -1)
			fatal("cannot secure chroot %s: %s", p.cfg->chroot_dir, strerror(errno));
	}
	/* Received: dates use local time; load the zone before chroot. */
	tzset();
	signal(SIGPIPE, SIG_IGN);

	p.base = event_base_new();
	if (p.base == NULL)
		fatal("event_base_new failed");
	ev_chld = evsignal_new(p.base, SIGCHLD, sigchld_cb, &p);
	ev_term = evsignal_new(p.base, SIGTERM, sigterm_cb, &p);
	ev_int = evsignal_new(p.base, SIGINT, sigterm_cb, &p);
	ev_hup = evsignal_new(p.base, SIGHUP, sighup_cb, &p);
	event_add(ev_chld, NULL);
	event_add(ev_term, NULL);
	event_add(ev_int, NULL);
	event_add(ev_hup, NULL);
	for (int k = 0; k < ROLE_COUNT; k++)
		p.w[k].restart_ev = evtimer_new(p.base, restart_cb, &p.w[k]);

	print_banner(&p);
	start_all(&p);
	event_base_dispatch(p.base);

	/* Workers that ignore the shutdown request get killed. */
	for (int i = 0; i < SHUTDOWN_GRACE_SECS * 10; i++) {
		bool alive = false;
		for (int k = 0; k < ROLE_COUNT; k++) {
			if (p.w[k].pid > 0 && waitpid(p.w[k].pid, NULL, WNOHANG) == p.w[k].pid)
				p.w[k].pid = 0;
			alive |= p.w[k].pid > 0;
		}
		if (!alive)
			break;
		usleep(100000);
	}
	for (int k = 0; k < ROLE_COUNT; k++) {
		if (p.w[k].pid > 0) {
			kill(p.w[k].pid, SIGKILL);
			waitpid(p.w[k].pid, NULL, 0);
		}
		ctl_free(&p.w[k].ctl);
		event_free(p.w[k].restart_ev);
	}
	event_free(ev_chld);
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	event_base_free(p.base);
	for (size_t i = 0; i < p.nlisten; i++)
		close(p.listen_fds[i]);
	if (p.submit_fd != -1) {
		struct stat st;

		close(p.submit_fd);
		if (lstat(p.cfg->submit_socket, &st) == 0 && S_ISSOCK(st.st_mode) &&
		    st.st_ino == p.submit_ino)
			(void)unlink(p.cfg->submit_socket);
	}
	log_info("parent event=stopped");
	config_free(&p.cfg);
	return p.exit_status;
}

static int
cmd_check_config(const char *path)
{
	char *errors = NULL;
	struct config *cfg = config_load(path, &errors);

	if (cfg == NULL) {
		fputs(errors ? errors : "configuration error\n", stderr);
		free(errors);
		return 1;
	}
	if (errors != NULL)
		fputs(errors, stderr);   /* warnings */
	free(errors);
	printf("%s: configuration ok\n", cfg->source);
	config_free(&cfg);
	return 0;
}

/* tern route ADDRESS [-c FILE] [--json]: route.h explains; exit 0, 1
 * (permanent failure) or 75 (temporary). */
static int
cmd_route(int argc, char **argv)
{
	const char *path = NULL, *address = NULL;
	struct config *cfg;
	bool json = false;
	int rc;

	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (argv[i][0] != '-' && address == NULL)
			address = argv[i];
		else
			address = NULL, i = argc;
	}
	if (address == NULL) {
		fprintf(stderr, "usage: tern route ADDRESS [-c FILE] [--json]\n");
		return 64;
	}
	if ((cfg = load_config(path)) == NULL)
		return 78;   /* EX_CONFIG */
	rc = route_explain(cfg, address, json, stdout);
	config_free(&cfg);
	return rc;
}

/* tern queue ...: queue_control.c talks to the running daemon; exit 0,
 * 1 (not found, refused), 64 (usage), 69 (not running), 78 (config). */
static int
cmd_queue(int argc, char **argv)
{
	const char *path = NULL;
	char *args[2];
	int nargs = 0, rc;
	bool json = false;
	struct config *cfg;

	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (argv[i][0] != '-' && nargs < 2)
			args[nargs++] = argv[i];
		else
			nargs = 0, i = argc;
	}
	if (nargs == 0)
		return queue_control_client(NULL, 0, NULL, false, stdout);
	if ((cfg = load_config(path)) == NULL)
		return 78;   /* EX_CONFIG */
	rc = queue_control_client(cfg, nargs, args, json, stdout);
	config_free(&cfg);
	return rc;
}

int
main(int argc, char **argv)
{
	const char *path = NULL;
	const char *cmd;
	int c;

	/* The classic interface: the binary installed as sendmail. */
	if (argc >= 1 && sendmail_invoked_as(argv[0]))
		return sendmail_main(argc, argv, 1);
	if (argc < 2)
		usage();
	cmd = argv[1];
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
		printf("tern %s\n", TERN_VERSION);
		return 0;
	}
	if (strcmp(cmd, "config-doc") == 0) {
		config_write_doc(stdout);
		return 0;
	}
	if (strcmp(cmd, "route") == 0)
		return cmd_route(argc, argv);
	if (strcmp(cmd, "passwd") == 0)      /* passwd.c */
		return passwd_main(argc, argv);
	if (strcmp(cmd, "queue") == 0)
		return cmd_queue(argc, argv);
	if (strcmp(cmd, "sendmail") == 0)
		return sendmail_main(argc, argv, 2);
	if (strcmp(cmd, "serve") == 0)
		proctitle_init(argc, argv);   /* before getopt keeps pointers */
	optind = 2;
	while ((c = getopt(argc, argv, "c:")) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (strcmp(cmd, "serve") == 0)
		return cmd_serve(path);
	if (strcmp(cmd, "check-config") == 0)
		return cmd_check_config(path);
	usage();
}
