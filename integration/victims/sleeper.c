/*
 * sleeper: spends nearly all of its life blocked in one long sleep, so a
 * dump lands inside the syscall.
 *
 * usage: sleeper [ms=2000]
 *
 * Output:  start pid=<pid> ms=<ms>
 *          before <n>
 *          after <n> elapsed_ms=<x> pid=<getpid()>
 *
 * The sleep resumes with the remaining time after EINTR (victim.h), so each
 * sleep must last at least <ms> whatever the restore did with the interrupted
 * syscall (restart it, or return EINTR with the remaining time in rem). A
 * shorter sleep means the restored task lost the remaining time: "FAIL".
 */
#include "victim.h"

int main(int argc, char **argv)
{
	long ms = arg_long(argc, argv, 1, 2000);

	say("start pid=%d ms=%ld", getpid(), ms);
	for (unsigned long n = 0;; n++) {
		say("before %lu", n);
		uint64_t t0 = now_ns();
		sleep_ms(ms);
		uint64_t el = (now_ns() - t0) / 1000000;
		if (el + 1 < (uint64_t)ms)
			fail("sleeper slept %lu ms of %ld in round %lu", (unsigned long)el, ms, n);
		say("after %lu elapsed_ms=%lu pid=%d", n, (unsigned long)el, getpid());
	}
}
