/*
 * exitcode: ticks a fixed number of times, then exits with status 7, so a
 * restore that waits for its task can be checked to pass the status on.
 *
 * usage: exitcode [ticks=20]
 *
 * Output:  start pid=<pid> ticks=<N>
 *          tick <n> pid=<getpid()>      (n = 0 .. N-1, every 100 ms)
 *          exiting 7
 */
#include "victim.h"

int main(int argc, char **argv)
{
	long ticks = arg_long(argc, argv, 1, 20);

	say("start pid=%d ticks=%ld", getpid(), ticks);
	for (long n = 0; n < ticks; n++) {
		say("tick %ld pid=%d", n, getpid());
		sleep_ms(100);
	}
	say("exiting 7");
	return 7;
}
