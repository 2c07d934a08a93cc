/*
 * ring: N processes passing a token around a ring of pipes, plus a zombie.
 *
 * usage: ring N TRIGGER
 *
 * The root (member 0) first forks a child that exits at once with status 42
 * and leaves it unreaped: a zombie. It then makes N pipes and forks members
 * 1..N-1; member i reads the token from pipe i and writes token+1 into pipe
 * (i+1) % N, so member i sees the tokens i, i+N, i+2N, ...: each checks that
 * its token grew by exactly N since its last one, and that its parent is
 * still the root. Member 2 (if any) moves itself into a process group of its
 * own. Each pass sleeps 30 ms before handing the token on, so at any moment
 * most members are blocked in read() and the token is often in a pipe.
 *
 * Once the file TRIGGER exists, the root reaps the zombie (at the next token
 * it sees) and reports what waitpid() returned.
 *
 * Output:  ring root=<pid> n=<N> zombie=<pid>
 *          ring <i> pid=<pid> ppid=<ppid> pgid=<pgid> token <t>
 *          reaped zombie=<pid> exited=<0|1> status=<code>
 */
#include "victim.h"

#include <sys/wait.h>

#define MAXN 16

static void read_token(int fd, uint64_t *t)
{
	size_t got = 0;

	while (got < sizeof(*t)) {
		ssize_t r = read(fd, (char *)t + got, sizeof(*t) - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			fail("ring read: %zd %s", r, r < 0 ? strerror(errno) : "EOF");
		got += (size_t)r;
	}
}

static void write_token(int fd, uint64_t t)
{
	for (;;) {
		ssize_t w = write(fd, &t, sizeof(t));

		if (w == (ssize_t)sizeof(t))
			return;
		if (w < 0 && errno == EINTR)
			continue;
		fail("ring write: %zd %s", w, w < 0 ? strerror(errno) : "short");
	}
}

int main(int argc, char **argv)
{
	long n = arg_long(argc, argv, 1, 4);
	pid_t root = getpid(), zombie;
	int p[MAXN][2];
	long me = 0;

	if (argc != 3 || n < 2 || n > MAXN)
		fail("usage: ring N(2..%d) TRIGGER", MAXN);
	const char *trigger = argv[2];

	zombie = fork();
	if (zombie < 0)
		fail("fork zombie: %s", strerror(errno));
	if (zombie == 0)
		_exit(42);
	say("ring root=%d n=%ld zombie=%d", root, n, zombie);

	for (long i = 0; i < n; i++)
		if (pipe(p[i]) != 0)
			fail("pipe: %s", strerror(errno));
	for (long i = 1; i < n; i++) {
		pid_t c = fork();

		if (c < 0)
			fail("fork member %ld: %s", i, strerror(errno));
		if (c == 0) {
			me = i;
			break;
		}
	}
	if (me == 2 && setpgid(0, 0) != 0)
		fail("setpgid: %s", strerror(errno));
	/* Keep only the read end of our pipe and the write end of the next. */
	long next = (me + 1) % n;
	for (long i = 0; i < n; i++) {
		if (i != me)
			close(p[i][0]);
		if (i != next)
			close(p[i][1]);
	}
	int in = p[me][0], out = p[next][1];

	uint64_t token = 0, last = 0;
	int first = 1, reaped = 0;
	for (;;) {
		/* The root starts the ring with token 0 instead of reading. */
		if (me != 0 || !first)
			read_token(in, &token);
		if (first && token != (uint64_t)me)
			fail("ring %ld first token %lu", me, (unsigned long)token);
		if (!first && token != last + (uint64_t)n)
			fail("ring %ld pid=%d token %lu after %lu, want +%ld", me, getpid(), (unsigned long)token,
			     (unsigned long)last, n);
		if (me != 0 && getppid() != root)
			fail("ring %ld pid=%d ppid=%d want %d", me, getpid(), getppid(), root);
		last = token;
		first = 0;
		say("ring %ld pid=%d ppid=%d pgid=%d token %lu", me, getpid(), getppid(), getpgrp(),
		    (unsigned long)token);
		if (me == 0 && !reaped && access(trigger, F_OK) == 0) {
			int st;
			pid_t w = waitpid(zombie, &st, WNOHANG);

			if (w != zombie)
				fail("waitpid zombie %d: %d %s", zombie, w, w < 0 ? strerror(errno) : "not a zombie");
			say("reaped zombie=%d exited=%d status=%d", zombie, WIFEXITED(st), WEXITSTATUS(st));
			reaped = 1;
		}
		sleep_ms(30);
		write_token(out, token + 1);
	}
}
