/*
 * forest: a parent and N children, each with its own patterned memory that
 * it re-verifies every tick.
 *
 * usage: forest [children=19] [MiB per process=2]
 *
 * The parent forks N children; then every process (index 0 = the parent,
 * 1..N = the children) maps its own MiB of anonymous memory and runs the
 * counter scheme on it: word w of page p holds pattern(index, w, version(p)),
 * where version(p) is 1 + the last tick that rewrote p's window; tick n
 * rewrites window n % R. The content is a pure function of (index, tick),
 * so lost, zeroed, stale or swapped-between-processes pages show up as
 * "FAIL" at the next verification. Children also check that their parent
 * is still the forest's root, and the root that no child has exited.
 *
 * Output (all processes share the output file; one write per line):
 *   forest pid=<root> children=<N> mib=<MiB>
 *   proc <index> pid=<pid> ppid=<ppid> tick <n> verified
 */
#include "victim.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define PAGE 4096ul
#define WPP (PAGE / 8)
#define WINDOW 16ul

static inline uint64_t pattern(uint64_t index, uint64_t word, uint64_t version)
{
	uint64_t x = word * 0x9E3779B97F4A7C15ull + (index + 1) * 0xC2B2AE3D27D4EB4Full +
		     (version + 1) * 0xD1B54A32D192ED03ull;

	x ^= x >> 31;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 29;
	return x;
}

/* version of page p after ticks 0..n-1, r windows in total (see counter.c). */
static inline uint64_t version(uint64_t p, uint64_t n, uint64_t r)
{
	uint64_t g = p / WINDOW;

	if (n == 0 || g > n - 1)
		return 0;
	return g + r * ((n - 1 - g) / r) + 1;
}

static void fill(uint64_t *area, uint64_t index, uint64_t p, uint64_t v)
{
	for (uint64_t i = 0; i < WPP; i++)
		area[p * WPP + i] = pattern(index, p * WPP + i, v);
}

static void run(uint64_t index, pid_t root, uint64_t mib)
{
	uint64_t npages = mib * (1024 * 1024 / PAGE), r = npages / WINDOW;
	uint64_t *area = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (area == MAP_FAILED)
		fail("proc %lu mmap: %s", (unsigned long)index, strerror(errno));
	for (uint64_t p = 0; p < npages; p++)
		fill(area, index, p, 0);
	for (uint64_t n = 0;; n++) {
		if (index > 0 && getppid() != root)
			fail("proc %lu pid=%d ppid=%d want %d", (unsigned long)index, getpid(), getppid(), root);
		if (index == 0) {
			int st;
			pid_t gone = waitpid(-1, &st, WNOHANG);
			if (gone != 0)
				fail("forest child %d ended (status %#x, %s)", gone, st, gone < 0 ? strerror(errno) : "");
		}
		for (uint64_t p = 0; p < npages; p++) {
			uint64_t v = version(p, n, r);

			for (uint64_t i = 0; i < WPP; i++) {
				uint64_t got = area[p * WPP + i], want = pattern(index, p * WPP + i, v);

				if (got != want)
					fail("proc %lu pid=%d tick=%lu page=%lu word=%lu got=%016lx want=%016lx",
					     (unsigned long)index, getpid(), (unsigned long)n, (unsigned long)p,
					     (unsigned long)i, (unsigned long)got, (unsigned long)want);
			}
		}
		say("proc %lu pid=%d ppid=%d tick %lu verified", (unsigned long)index, getpid(), getppid(),
		    (unsigned long)n);
		uint64_t first = (n % r) * WINDOW;
		for (uint64_t p = first; p < first + WINDOW; p++)
			fill(area, index, p, n + 1);
		sleep_ms(100);
	}
}

int main(int argc, char **argv)
{
	long children = arg_long(argc, argv, 1, 19);
	long mib = arg_long(argc, argv, 2, 2);
	pid_t root = getpid();

	if (mib < 1)
		mib = 1;
	say("forest pid=%d children=%ld mib=%ld", root, children, mib);
	for (long i = 1; i <= children; i++) {
		pid_t c = fork();

		if (c < 0)
			fail("fork %ld: %s", i, strerror(errno));
		if (c == 0)
			run((uint64_t)i, root, (uint64_t)mib);
	}
	run(0, root, (uint64_t)mib);
	return 0;
}
