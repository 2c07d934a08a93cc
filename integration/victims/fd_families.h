/*
 * The fd families of the fd_* victims: each family has a setup function,
 * run once, and a check function, run every tick, which verifies the
 * family's state, consumes what it left pending the tick before and leaves
 * new pending state (unread data, counters) for the next tick, so a dump
 * at any moment catches state that must survive. Anything wrong is a FAIL.
 *
 * Families (and what a lost piece of state looks like):
 *   fifo    a FIFO with unread data, the read end O_NONBLOCK   (data, flags)
 *   unix    stream/dgram/seqpacket pairs with queued messages, a listener
 *           with an accepted connection, a bound datagram socket with
 *           messages from an unbound one and from one connected to it,
 *           a pair whose peer closed
 *                                                   (queues, boundaries)
 *   event   eventfds (one a semaphore), a periodic timerfd, a signalfd,
 *           an epoll over them and a pipe                  (counters, timer,
 *           watches and their data)
 *   inotify watches with non-trivial descriptors            (wd numbers)
 *   shm     a sealed memfd, mapped shared and read through its fd at a set
 *           position; MAP_SHARED anonymous memory split in three VMAs by
 *           mprotect, with data and holes                   (contents, seals)
 *   sysv    a System V shared memory segment with data and holes, marked
 *           IPC_RMID while attached (so nothing outlives the victim)
 *                                                   (contents, id, mark)
 *   ghost   a deleted 8 MiB sparse file (4 KiB of data every 8 KiB), and a
 *           deleted file only a mapping holds              (data, holes)
 *   pty     a pty pair with set termios and window size    (index, modes)
 *   locks   flock, POSIX and OFD locks (checked from outside by the test)
 *
 * Victims print "ready <family> ..." lines, then "tick <n>" lines.
 */
#ifndef LAZYR_FD_FAMILIES_H
#define LAZYR_FD_FAMILIES_H

#include "victim.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <termios.h>

#define FPAGE 4096ul

__attribute__((unused)) static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Write all of s or die. */
__attribute__((unused)) static void put_all(int fd, const void *s, size_t n, const char *what)
{
	ssize_t w = write(fd, s, n);

	if (w != (ssize_t)n)
		fail("%s: write %zu bytes: %zd (%s)", what, n, w, w < 0 ? strerror(errno) : "short");
}

/* Read exactly the message want from fd (non-blocking) or die. */
__attribute__((unused)) static void expect_msg(int fd, const char *want, const char *what)
{
	char buf[256];
	ssize_t r = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

	if (r < 0)
		fail("%s: nothing queued, want '%s' (%s)", what, want, strerror(errno));
	buf[r] = '\0';
	if (strcmp(buf, want) != 0)
		fail("%s: got '%s' want '%s'", what, buf, want);
}

/* ---------------------------------------------------------------- fifo */

static struct {
	int rd, wr;
} ff;

__attribute__((unused)) static void fifo_setup(const char *dir)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/fifo", dir);
	if (mkfifo(path, 0640) < 0 && errno != EEXIST)
		fail("mkfifo %s: %s", path, strerror(errno));
	ff.rd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	ff.wr = open(path, O_WRONLY);
	if (ff.rd < 0 || ff.wr < 0)
		fail("open fifo: %s", strerror(errno));
	put_all(ff.wr, "fifo-0", 6, "fifo");
	say("ready fifo path=%s rd=%d wr=%d", path, ff.rd, ff.wr);
}

__attribute__((unused)) static void fifo_check(unsigned long n)
{
	char want[32], buf[64];
	ssize_t r;

	if (!(fcntl(ff.rd, F_GETFL) & O_NONBLOCK))
		fail("fifo read end lost O_NONBLOCK");
	if (!(fcntl(ff.rd, F_GETFD) & FD_CLOEXEC) || (fcntl(ff.wr, F_GETFD) & FD_CLOEXEC))
		fail("fifo fds: FD_CLOEXEC changed");
	snprintf(want, sizeof(want), "fifo-%lu", n);
	r = read(ff.rd, buf, sizeof(buf) - 1);
	if (r < 0)
		fail("fifo: no data, want '%s' (%s)", want, strerror(errno));
	buf[r] = '\0';
	if (strcmp(buf, want) != 0)
		fail("fifo: got '%s' want '%s'", buf, want);
	snprintf(want, sizeof(want), "fifo-%lu", n + 1);
	put_all(ff.wr, want, strlen(want), "fifo");
}

/* ---------------------------------------------------------------- unix */

static struct {
	int st[2], dg[2], sq[2], dead;
	int lis, cli, acc;
	int rcv, snd, con;
	char lpath[108], rpath[108];
} us;

__attribute__((unused)) static void unix_send_round(unsigned long n)
{
	char m[64];
	int i;

	/* stream: two writes, read back as one piece */
	snprintf(m, sizeof(m), "st-%lu-a,", n);
	put_all(us.st[0], m, strlen(m), "stream");
	snprintf(m, sizeof(m), "st-%lu-b", n);
	put_all(us.st[0], m, strlen(m), "stream");
	for (i = 0; i < 3; i++) {
		snprintf(m, sizeof(m), "dg-%lu-%d", n, i);
		put_all(us.dg[0], m, strlen(m), "dgram");
	}
	for (i = 0; i < 2; i++) {
		snprintf(m, sizeof(m), "sq-%lu-%d", n, i);
		put_all(us.sq[1], m, strlen(m), "seqpacket");
	}
	snprintf(m, sizeof(m), "cli-%lu", n);
	put_all(us.cli, m, strlen(m), "client");
	snprintf(m, sizeof(m), "acc-%lu", n);
	put_all(us.acc, m, strlen(m), "accepted");
	for (i = 0; i < 2; i++) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		strcpy(sa.sun_path, us.rpath);
		snprintf(m, sizeof(m), "rcv-%lu-%d", n, i);
		if (sendto(us.snd, m, strlen(m), 0, (struct sockaddr *)&sa, sizeof(sa)) != (ssize_t)strlen(m))
			fail("sendto %s: %s", us.rpath, strerror(errno));
	}
	/* connected one way only: the receiver is not connected back */
	snprintf(m, sizeof(m), "con-%lu", n);
	if (send(us.con, m, strlen(m), 0) != (ssize_t)strlen(m))
		fail("send on the connected datagram socket: %s", strerror(errno));
}

__attribute__((unused)) static void unix_setup(const char *dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int d[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, us.st) < 0 || socketpair(AF_UNIX, SOCK_DGRAM, 0, us.dg) < 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, us.sq) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, d) < 0)
		fail("socketpair: %s", strerror(errno));
	if (set_nonblock(us.st[1]) < 0)
		fail("nonblock: %s", strerror(errno));
	/* a pair whose peer wrote its last words and closed */
	put_all(d[0], "last-words", 10, "dead pair");
	close(d[0]);
	us.dead = d[1];

	snprintf(us.lpath, sizeof(us.lpath), "%s/unix.sock", dir);
	strcpy(sa.sun_path, us.lpath);
	unlink(us.lpath);
	us.lis = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (us.lis < 0 || bind(us.lis, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(us.lis, 7) < 0)
		fail("listen %s: %s", us.lpath, strerror(errno));
	us.cli = socket(AF_UNIX, SOCK_STREAM, 0);
	if (us.cli < 0 || connect(us.cli, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		fail("connect %s: %s", us.lpath, strerror(errno));
	us.acc = accept4(us.lis, NULL, NULL, 0);
	if (us.acc < 0)
		fail("accept: %s", strerror(errno));

	snprintf(us.rpath, sizeof(us.rpath), "%s/dgram.sock", dir);
	strcpy(sa.sun_path, us.rpath);
	unlink(us.rpath);
	us.rcv = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (us.rcv < 0 || bind(us.rcv, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		fail("bind %s: %s", us.rpath, strerror(errno));
	us.snd = socket(AF_UNIX, SOCK_DGRAM, 0);
	us.con = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (us.snd < 0 || us.con < 0 || connect(us.con, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		fail("datagram sockets: %s", strerror(errno));
	unix_send_round(0);
	say("ready unix listen=%s dgram=%s", us.lpath, us.rpath);
}

__attribute__((unused)) static void unix_check(unsigned long n)
{
	char want[64], buf[256];
	ssize_t r;
	int i, c;

	if (!(fcntl(us.st[1], F_GETFL) & O_NONBLOCK))
		fail("stream socket lost O_NONBLOCK");
	snprintf(want, sizeof(want), "st-%lu-a,st-%lu-b", n, n);
	r = recv(us.st[1], buf, sizeof(buf) - 1, MSG_DONTWAIT);
	if (r < 0)
		fail("stream: nothing queued (%s)", strerror(errno));
	buf[r] = '\0';
	if (strcmp(buf, want) != 0)
		fail("stream: got '%s' want '%s'", buf, want);
	for (i = 0; i < 3; i++) {
		snprintf(want, sizeof(want), "dg-%lu-%d", n, i);
		expect_msg(us.dg[1], want, "dgram pair");
	}
	for (i = 0; i < 2; i++) {
		snprintf(want, sizeof(want), "sq-%lu-%d", n, i);
		expect_msg(us.sq[0], want, "seqpacket pair");
	}
	snprintf(want, sizeof(want), "cli-%lu", n);
	expect_msg(us.acc, want, "accepted");
	snprintf(want, sizeof(want), "acc-%lu", n);
	expect_msg(us.cli, want, "client");
	for (i = 0; i < 2; i++) {
		snprintf(want, sizeof(want), "rcv-%lu-%d", n, i);
		expect_msg(us.rcv, want, "bound dgram");
	}
	snprintf(want, sizeof(want), "con-%lu", n);
	expect_msg(us.rcv, want, "bound dgram (from the connected socket)");
	r = recv(us.dead, buf, sizeof(buf) - 1, MSG_PEEK | MSG_DONTWAIT);
	if (r != 10 || memcmp(buf, "last-words", 10) != 0)
		fail("dead pair: peeked %zd bytes", r);
	/* a client from outside (the test): answer "ping" with "pong" */
	c = accept4(us.lis, NULL, NULL, SOCK_CLOEXEC);
	if (c >= 0) {
		struct timeval tv = { 1, 0 };

		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		r = read(c, buf, sizeof(buf) - 1);
		if (r == 5 && memcmp(buf, "ping\n", 5) == 0) {
			put_all(c, "pong\n", 5, "pong");
			say("unix served a client");
		}
		close(c);
	} else if (errno != EAGAIN)
		fail("accept: %s", strerror(errno));
	unix_send_round(n + 1);
}

/* ---------------------------------------------------------------- event */

#define EV_EFD 1
#define EV_TFD 2
#define EV_SFD 3
#define EV_PIPE 4

static struct {
	int efd, sem, tfd, sfd, ep, pipe[2];
} ev;

__attribute__((unused)) static void event_setup(void)
{
	struct itimerspec its = { { 0, 30000000 }, { 0, 30000000 } };
	struct epoll_event e;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		fail("sigprocmask: %s", strerror(errno));
	ev.efd = eventfd(5, EFD_NONBLOCK);
	ev.sem = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
	ev.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	ev.sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	ev.ep = epoll_create1(EPOLL_CLOEXEC);
	if (ev.efd < 0 || ev.sem < 0 || ev.tfd < 0 || ev.sfd < 0 || ev.ep < 0 || pipe2(ev.pipe, O_NONBLOCK) < 0)
		fail("event setup: %s", strerror(errno));
	if (timerfd_settime(ev.tfd, 0, &its, NULL) < 0)
		fail("timerfd_settime: %s", strerror(errno));
	e.events = EPOLLIN;
	e.data.u64 = EV_EFD | 0xabc00000000ull;
	if (epoll_ctl(ev.ep, EPOLL_CTL_ADD, ev.efd, &e) < 0)
		fail("epoll_ctl: %s", strerror(errno));
	e.data.u64 = EV_TFD;
	if (epoll_ctl(ev.ep, EPOLL_CTL_ADD, ev.tfd, &e) < 0)
		fail("epoll_ctl: %s", strerror(errno));
	e.data.u64 = EV_SFD;
	if (epoll_ctl(ev.ep, EPOLL_CTL_ADD, ev.sfd, &e) < 0)
		fail("epoll_ctl: %s", strerror(errno));
	e.events = EPOLLIN | EPOLLET;
	e.data.u64 = EV_PIPE;
	if (epoll_ctl(ev.ep, EPOLL_CTL_ADD, ev.pipe[0], &e) < 0)
		fail("epoll_ctl: %s", strerror(errno));
	put_all(ev.pipe[1], "pipe-0", 6, "pipe");
	say("ready event efd=%d sem=%d tfd=%d sfd=%d epoll=%d", ev.efd, ev.sem, ev.tfd, ev.sfd, ev.ep);
}

__attribute__((unused)) static void event_check(unsigned long n)
{
	struct epoll_event evs[8];
	struct itimerspec its;
	uint64_t v;
	int i, k, seen = 0;
	char want[32], buf[64];
	ssize_t r;

	/* what epoll reports: the eventfd (value 5+n), the pipe (data), the timer (fired) */
	usleep(40000); /* > one timer period */
	k = epoll_wait(ev.ep, evs, 8, 0);
	if (k < 0)
		fail("epoll_wait: %s", strerror(errno));
	for (i = 0; i < k; i++) {
		switch (evs[i].data.u64) {
		case EV_EFD | 0xabc00000000ull:
			seen |= 1;
			break;
		case EV_TFD:
			seen |= 2;
			break;
		case EV_PIPE:
			seen |= 4;
			break;
		case EV_SFD:
			break;
		default:
			fail("epoll: unknown data %#llx", (unsigned long long)evs[i].data.u64);
		}
	}
	if (seen != 7)
		fail("epoll reported %#x of 0x7 (eventfd, timer, pipe)", seen);
	if (read(ev.efd, &v, 8) != 8 || v != 5 + n)
		fail("eventfd: %llu want %lu", (unsigned long long)v, 5 + n);
	v = 5 + n + 1;
	put_all(ev.efd, &v, 8, "eventfd");
	if (read(ev.sem, &v, 8) != 8 || v != 1)
		fail("semaphore eventfd read %llu (%s)", (unsigned long long)v, strerror(errno));
	v = 1;
	put_all(ev.sem, &v, 8, "semaphore eventfd");
	if (read(ev.tfd, &v, 8) != 8 || v == 0)
		fail("timerfd: not firing (%s)", strerror(errno));
	if (timerfd_gettime(ev.tfd, &its) < 0 || its.it_interval.tv_sec != 0 || its.it_interval.tv_nsec != 30000000)
		fail("timerfd interval %ld.%09ld", (long)its.it_interval.tv_sec, its.it_interval.tv_nsec);
	snprintf(want, sizeof(want), "pipe-%lu", n);
	r = read(ev.pipe[0], buf, sizeof(buf) - 1);
	if (r < 0)
		fail("pipe: no data (%s)", strerror(errno));
	buf[r] = '\0';
	if (strcmp(buf, want) != 0)
		fail("pipe: got '%s' want '%s'", buf, want);
	snprintf(want, sizeof(want), "pipe-%lu", n + 1);
	put_all(ev.pipe[1], want, strlen(want), "pipe");
	for (;;) {
		struct signalfd_siginfo si;

		r = read(ev.sfd, &si, sizeof(si));
		if (r < 0 && errno == EAGAIN)
			break;
		if (r != sizeof(si))
			fail("signalfd read: %zd (%s)", r, strerror(errno));
		say("signal %u from %u", si.ssi_signo, si.ssi_pid);
	}
}

/* -------------------------------------------------------------- inotify */

static struct {
	int fd, wd_dir, wd_file;
	char dir[PATH_MAX];
} in;

__attribute__((unused)) static void inotify_setup(const char *dir)
{
	char path[PATH_MAX];
	int i, w;

	snprintf(in.dir, sizeof(in.dir), "%s/watched", dir);
	if (mkdir(in.dir, 0755) < 0 && errno != EEXIST)
		fail("mkdir %s: %s", in.dir, strerror(errno));
	snprintf(path, sizeof(path), "%s/file", dir);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	in.fd = inotify_init1(IN_NONBLOCK);
	if (in.fd < 0)
		fail("inotify_init1: %s", strerror(errno));
	/* burn a few descriptors so that the watches have non-trivial numbers */
	for (i = 0; i < 4; i++) {
		w = inotify_add_watch(in.fd, "/", IN_ATTRIB);
		if (w < 0 || inotify_rm_watch(in.fd, w) < 0)
			fail("inotify burn: %s", strerror(errno));
	}
	in.wd_dir = inotify_add_watch(in.fd, in.dir, IN_CREATE | IN_DELETE);
	in.wd_file = inotify_add_watch(in.fd, path, IN_MODIFY | IN_CLOSE_WRITE);
	if (in.wd_dir < 0 || in.wd_file < 0)
		fail("inotify_add_watch: %s", strerror(errno));
	/* drop the IN_IGNORED events of the burnt descriptors */
	while (read(in.fd, path, sizeof(path)) > 0)
		;
	say("ready inotify dir=%s wd_dir=%d wd_file=%d", in.dir, in.wd_dir, in.wd_file);
}

__attribute__((unused)) static void inotify_check(unsigned long n)
{
	char buf[4096] __attribute__((aligned(8)));
	ssize_t r;

	(void)n;
	while ((r = read(in.fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + r;) {
			struct inotify_event *e = (struct inotify_event *)p;

			if (e->wd != in.wd_dir && e->wd != in.wd_file)
				fail("inotify event for unknown wd %d (mask %#x)", e->wd, e->mask);
			say("inotify wd=%d mask=%#x name=%s", e->wd, e->mask, e->len ? e->name : "");
			p += sizeof(*e) + e->len;
		}
	}
	if (r < 0 && errno != EAGAIN)
		fail("inotify read: %s", strerror(errno));
}

/* ------------------------------------------------------------------ shm */

#define MEMFD_SIZE (16 * FPAGE)
#define ANON_PAGES 64

static struct {
	int mfd;
	unsigned char *map;    /* MAP_SHARED of the memfd */
	unsigned char *anon;   /* MAP_SHARED|MAP_ANONYMOUS, ANON_PAGES pages */
	unsigned long *tick;   /* in anon: the tick counter */
} sh;

__attribute__((unused)) static unsigned char anon_byte(unsigned long page)
{
	return (unsigned char)(0x40 + page);
}

__attribute__((unused)) static void shm_setup(void)
{
	unsigned long p;

	sh.mfd = memfd_create("lazyr-memfd", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (sh.mfd < 0 || ftruncate(sh.mfd, MEMFD_SIZE) < 0)
		fail("memfd: %s", strerror(errno));
	if (fcntl(sh.mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
		fail("seals: %s", strerror(errno));
	sh.map = mmap(NULL, MEMFD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, sh.mfd, 0);
	if (sh.map == MAP_FAILED)
		fail("mmap memfd: %s", strerror(errno));
	memset(sh.map + 5 * FPAGE, 0x5a, FPAGE);
	if (lseek(sh.mfd, 1000, SEEK_SET) != 1000)
		fail("lseek memfd: %s", strerror(errno));
	sh.anon = mmap(NULL, ANON_PAGES * FPAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh.anon == MAP_FAILED)
		fail("mmap shared: %s", strerror(errno));
	/* every third page written, the rest never touched (holes) */
	for (p = 1; p < ANON_PAGES; p += 3)
		memset(sh.anon + p * FPAGE, anon_byte(p), FPAGE);
	sh.tick = (unsigned long *)sh.anon;
	*sh.tick = 0;
	/* split: pages 30..39 read-only, three VMAs of one object */
	if (mprotect(sh.anon + 30 * FPAGE, 10 * FPAGE, PROT_READ) < 0)
		fail("mprotect: %s", strerror(errno));
	say("ready shm memfd=%d map=%p anon=%p", sh.mfd, (void *)sh.map, (void *)sh.anon);
}

__attribute__((unused)) static void shm_check(unsigned long n)
{
	char link[128], path[64];
	unsigned char b[16];
	unsigned long p;
	ssize_t k;
	int seals;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", sh.mfd);
	k = readlink(path, link, sizeof(link) - 1);
	link[k > 0 ? k : 0] = '\0';
	if (strcmp(link, "/memfd:lazyr-memfd (deleted)") != 0)
		fail("memfd is now '%s'", link);
	seals = fcntl(sh.mfd, F_GET_SEALS);
	if (seals != (F_SEAL_SHRINK | F_SEAL_GROW))
		fail("memfd seals %#x", seals);
	if (lseek(sh.mfd, 0, SEEK_CUR) != 1000)
		fail("memfd position %ld", (long)lseek(sh.mfd, 0, SEEK_CUR));
	/* the mapping and the fd are the same file */
	if (pread(sh.mfd, b, 1, 5 * FPAGE) != 1 || b[0] != 0x5a)
		fail("memfd page 5 through the fd: %#x", b[0]);
	if (sh.map[7 * FPAGE + 9] != (unsigned char)n)
		fail("memfd: mapping holds %u at page 7, the fd wrote %lu", sh.map[7 * FPAGE + 9], n & 0xff);
	b[0] = (unsigned char)(n + 1);
	if (pwrite(sh.mfd, b, 1, 7 * FPAGE + 9) != 1)
		fail("memfd pwrite: %s", strerror(errno));
	if (sh.map[7 * FPAGE + 9] != (unsigned char)(n + 1))
		fail("memfd: the mapping does not see the fd's write");
	/* shared anonymous memory: the counter, data pages and holes */
	if (*sh.tick != n)
		fail("shared anonymous counter %lu want %lu", *sh.tick, n);
	for (p = 1; p < ANON_PAGES; p++) {
		unsigned char want = (p % 3 == 1) ? anon_byte(p) : 0;

		if (sh.anon[p * FPAGE] != want || sh.anon[p * FPAGE + FPAGE - 1] != want)
			fail("shared anonymous page %lu holds %#x want %#x", p, sh.anon[p * FPAGE], want);
	}
	(*sh.tick)++;
}

/* ----------------------------------------------------------------- sysv */

#define SYSV_PAGES 8

static struct {
	int id;
	unsigned char *seg;    /* SYSV_PAGES pages: the tick counter, data on odd pages, holes */
} sv;

__attribute__((unused)) static void sysv_setup(void)
{
	sv.id = shmget(IPC_PRIVATE, SYSV_PAGES * FPAGE, IPC_CREAT | 0600);
	if (sv.id < 0)
		fail("shmget: %s", strerror(errno));
	sv.seg = shmat(sv.id, NULL, 0);
	if (sv.seg == (void *)-1)
		fail("shmat: %s", strerror(errno));
	if (shmctl(sv.id, IPC_RMID, NULL) < 0)
		fail("shmctl(IPC_RMID): %s", strerror(errno));
	for (unsigned long p = 1; p < SYSV_PAGES; p += 2)
		memset(sv.seg + p * FPAGE, (int)(0x30 + p), FPAGE);
	say("ready sysv id=%d seg=%p", sv.id, (void *)sv.seg);
}

__attribute__((unused)) static void sysv_check(unsigned long n)
{
	volatile unsigned long *tick = (volatile unsigned long *)sv.seg;
	struct shmid_ds ds;

	if (*tick != n)
		fail("sysv counter %lu want %lu", *tick, n);
	for (unsigned long p = 1; p < SYSV_PAGES; p++) {
		unsigned char want = p % 2 ? (unsigned char)(0x30 + p) : 0;

		if (sv.seg[p * FPAGE] != want || sv.seg[p * FPAGE + FPAGE - 1] != want)
			fail("sysv page %lu holds %#x want %#x", p, sv.seg[p * FPAGE], want);
	}
	if (shmctl(sv.id, IPC_STAT, &ds) < 0 || !(ds.shm_perm.mode & SHM_DEST))
		fail("sysv segment %d: %s, mode %#o, want it marked IPC_RMID", sv.id, strerror(errno), (unsigned)ds.shm_perm.mode);
	(*tick)++;
}

/* ---------------------------------------------------------------- ghost */

#define GHOST_SIZE (8ul << 20)
#define GHOST_MAP_SIZE (16 * FPAGE)

static struct {
	int fd;
	unsigned char *map;
} gh;

__attribute__((unused)) static unsigned char ghost_byte(unsigned long chunk)
{
	return (unsigned char)(1 + chunk % 251);
}

__attribute__((unused)) static void ghost_setup(const char *dir)
{
	char path[PATH_MAX];
	unsigned char buf[FPAGE];
	unsigned long c;
	int mfd;

	snprintf(path, sizeof(path), "%s/ghost", dir);
	gh.fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0640);
	if (gh.fd < 0 || ftruncate(gh.fd, GHOST_SIZE) < 0)
		fail("ghost %s: %s", path, strerror(errno));
	/* 4 KiB of data at the start of every 8 KiB */
	for (c = 0; c < GHOST_SIZE / (2 * FPAGE); c++) {
		memset(buf, ghost_byte(c), sizeof(buf));
		if (pwrite(gh.fd, buf, FPAGE, c * 2 * FPAGE) != (ssize_t)FPAGE)
			fail("ghost write: %s", strerror(errno));
	}
	if (unlink(path) < 0)
		fail("unlink: %s", strerror(errno));
	lseek(gh.fd, 12345, SEEK_SET);

	snprintf(path, sizeof(path), "%s/ghost-mapped", dir);
	mfd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (mfd < 0 || ftruncate(mfd, GHOST_MAP_SIZE) < 0)
		fail("ghost-mapped: %s", strerror(errno));
	gh.map = mmap(NULL, GHOST_MAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (gh.map == MAP_FAILED)
		fail("mmap ghost-mapped: %s", strerror(errno));
	close(mfd);
	unlink(path);
	memset(gh.map + 3 * FPAGE, 0x33, FPAGE);
	say("ready ghost fd=%d map=%p", gh.fd, (void *)gh.map);
}

__attribute__((unused)) static void ghost_check(unsigned long n)
{
	unsigned char b[2];
	struct stat st;
	char link[PATH_MAX], path[64];
	unsigned long c;
	ssize_t k;

	if (fstat(gh.fd, &st) < 0 || st.st_nlink != 0 || st.st_size != (off_t)GHOST_SIZE)
		fail("ghost: nlink %lu size %ld", (unsigned long)st.st_nlink, (long)st.st_size);
	if ((unsigned long)st.st_blocks * 512 > GHOST_SIZE / 2 + (256 << 10))
		fail("ghost: %ld bytes allocated, holes lost", (long)st.st_blocks * 512);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", gh.fd);
	k = readlink(path, link, sizeof(link) - 1);
	link[k > 0 ? k : 0] = '\0';
	if (k < 0 || !strstr(link, " (deleted)"))
		fail("ghost fd is now '%s'", link);
	if (lseek(gh.fd, 0, SEEK_CUR) != 12345)
		fail("ghost position %ld", (long)lseek(gh.fd, 0, SEEK_CUR));
	for (c = n % 7; c < GHOST_SIZE / (2 * FPAGE); c += 97) {
		if (pread(gh.fd, b, 1, c * 2 * FPAGE + 17) != 1 || b[0] != ghost_byte(c))
			fail("ghost chunk %lu: %#x want %#x", c, b[0], ghost_byte(c));
		if (pread(gh.fd, b, 1, c * 2 * FPAGE + FPAGE + 17) != 1 || b[0] != 0)
			fail("ghost hole after chunk %lu: %#x", c, b[0]);
	}
	if (gh.map[3 * FPAGE] != 0x33 || gh.map[5 * FPAGE + 1] != (unsigned char)n)
		fail("ghost mapping: %#x %#x want 0x33 %#lx", gh.map[3 * FPAGE], gh.map[5 * FPAGE + 1], n & 0xff);
	gh.map[5 * FPAGE + 1] = (unsigned char)(n + 1);
}

/* ------------------------------------------------------------------ pty */

static struct {
	int master, slave, index;
} pt;

__attribute__((unused)) static void pty_setup(void)
{
	struct winsize ws = { .ws_row = 33, .ws_col = 77 };
	struct termios t;

	pt.master = posix_openpt(O_RDWR | O_NOCTTY);
	if (pt.master < 0 || grantpt(pt.master) < 0 || unlockpt(pt.master) < 0)
		fail("posix_openpt: %s", strerror(errno));
	if (ioctl(pt.master, TIOCGPTN, &pt.index) < 0)
		fail("TIOCGPTN: %s", strerror(errno));
	pt.slave = open(ptsname(pt.master), O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (pt.slave < 0)
		fail("open %s: %s", ptsname(pt.master), strerror(errno));
	if (tcgetattr(pt.slave, &t) < 0)
		fail("tcgetattr: %s", strerror(errno));
	cfmakeraw(&t);
	t.c_cc[VMIN] = 0;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(pt.slave, TCSANOW, &t) < 0 || ioctl(pt.master, TIOCSWINSZ, &ws) < 0)
		fail("tcsetattr: %s", strerror(errno));
	say("ready pty index=%d master=%d slave=%d", pt.index, pt.master, pt.slave);
}

__attribute__((unused)) static void pty_check(unsigned long n)
{
	struct winsize ws;
	struct termios t;
	char m[32], buf[64];
	int idx;
	ssize_t r;

	if (ioctl(pt.master, TIOCGPTN, &idx) < 0 || idx != pt.index)
		fail("pty index %d want %d", idx, pt.index);
	if (ioctl(pt.slave, TIOCGWINSZ, &ws) < 0 || ws.ws_row != 33 || ws.ws_col != 77)
		fail("pty window %ux%u want 33x77", ws.ws_row, ws.ws_col);
	if (tcgetattr(pt.slave, &t) < 0 || (t.c_lflag & (ICANON | ECHO)))
		fail("pty termios lflag %#x: raw mode lost", t.c_lflag);
	snprintf(m, sizeof(m), "pty-%lu", n);
	put_all(pt.master, m, strlen(m), "pty master");
	usleep(2000);
	r = read(pt.slave, buf, sizeof(buf) - 1);
	if (r < 0)
		fail("pty slave read: %s", strerror(errno));
	buf[r] = '\0';
	if (strcmp(buf, m) != 0)
		fail("pty: slave read '%s' want '%s'", buf, m);
}

/* ---------------------------------------------------------------- locks */

__attribute__((unused)) static void locks_setup(const char *dir)
{
	struct flock fl = { .l_whence = SEEK_SET };
	char path[PATH_MAX];
	int f, p, o;

	snprintf(path, sizeof(path), "%s/lock-flock", dir);
	f = open(path, O_RDWR | O_CREAT, 0644);
	snprintf(path, sizeof(path), "%s/lock-posix", dir);
	p = open(path, O_RDWR | O_CREAT, 0644);
	snprintf(path, sizeof(path), "%s/lock-ofd", dir);
	o = open(path, O_RDWR | O_CREAT, 0644);
	if (f < 0 || p < 0 || o < 0)
		fail("lock files: %s", strerror(errno));
	if (flock(f, LOCK_EX | LOCK_NB) < 0)
		fail("flock: %s", strerror(errno));
	fl.l_type = F_WRLCK;
	fl.l_start = 10;
	fl.l_len = 20;
	if (fcntl(p, F_SETLK, &fl) < 0)
		fail("F_SETLK: %s", strerror(errno));
	fl.l_type = F_RDLCK;
	fl.l_start = 100;
	fl.l_len = 0;
	if (fcntl(p, F_SETLK, &fl) < 0)
		fail("F_SETLK: %s", strerror(errno));
	fl.l_type = F_WRLCK;
	fl.l_start = 0;
	fl.l_len = 5;
	if (fcntl(o, F_OFD_SETLK, &fl) < 0)
		fail("F_OFD_SETLK: %s", strerror(errno));
	say("ready locks flock=%d posix=%d ofd=%d", f, p, o);
}

#endif
