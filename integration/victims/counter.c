/*
 * counter: N MiB of anonymous memory whose whole content is re-verified
 * every tick.
 *
 * usage: counter [MiB=64] [seed=24301]
 *
 * Word w (8 bytes) of page p holds pattern(w, version(p)), where version(p)
 * is 1 + the last tick that rewrote p's window (0 = never rewritten). Tick n
 * rewrites window n % R (R windows of WINDOW pages), so version(p) is a pure
 * function of the tick counter: nothing outside registers and the stack is
 * needed to know what every byte of the area must hold. A restore that loses,
 * zeroes, shifts or mixes up pages, or restores a stale tick counter, shows up
 * as "FAIL ..." at the next verification.
 *
 * Output:  start pid=<pid> mib=<N> addr=<area> size=<bytes>
 *          verified <n>
 *          tick <n> sum=<hex> pid=<getpid()>
 */
#include "victim.h"

#include <sys/mman.h>

#define PAGE 4096ul
#define WORDS_PER_PAGE (PAGE / 8)
#define WINDOW 64ul /* pages rewritten per tick (256 KiB) */

static uint64_t seed;

static inline uint64_t pattern(uint64_t word, uint64_t version)
{
	uint64_t x = word * 0x9E3779B97F4A7C15ull + seed + (version + 1) * 0xD1B54A32D192ED03ull;

	x ^= x >> 31;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 29;
	return x;
}

/* version of page p after ticks 0..n-1 have run, R windows in total. */
static inline uint64_t version(uint64_t p, uint64_t n, uint64_t r)
{
	uint64_t g = p / WINDOW;

	if (n == 0 || g > n - 1)
		return 0;
	return g + r * ((n - 1 - g) / r) + 1;
}

static void fill_page(uint64_t *area, uint64_t p, uint64_t v)
{
	uint64_t *w = area + p * WORDS_PER_PAGE;

	for (uint64_t i = 0; i < WORDS_PER_PAGE; i++)
		w[i] = pattern(p * WORDS_PER_PAGE + i, v);
}

int main(int argc, char **argv)
{
	long mib = arg_long(argc, argv, 1, 64);
	uint64_t npages, r, n;

	seed = (uint64_t)arg_long(argc, argv, 2, 24301);
	if (mib < 1)
		mib = 1;
	npages = (uint64_t)mib * (1024 * 1024 / PAGE);
	r = npages / WINDOW;

	uint64_t *area = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		fail("mmap: %s", strerror(errno));
	for (uint64_t p = 0; p < npages; p++)
		fill_page(area, p, 0);

	say("start pid=%d mib=%ld addr=%p size=%lu", getpid(), mib, (void *)area,
	    (unsigned long)(npages * PAGE));

	for (n = 0;; n++) {
		uint64_t sum = 0;

		for (uint64_t p = 0; p < npages; p++) {
			uint64_t v = version(p, n, r);
			const uint64_t *w = area + p * WORDS_PER_PAGE;

			for (uint64_t i = 0; i < WORDS_PER_PAGE; i++) {
				uint64_t want = pattern(p * WORDS_PER_PAGE + i, v);

				if (w[i] != want)
					fail("counter tick=%lu page=%lu word=%lu addr=%p got=%016lx want=%016lx",
					     (unsigned long)n, (unsigned long)p, (unsigned long)i,
					     (void *)&w[i], (unsigned long)w[i], (unsigned long)want);
				sum += w[i];
			}
		}
		say("verified %lu", (unsigned long)n);
		say("tick %lu sum=%016lx pid=%d", (unsigned long)n, (unsigned long)sum, getpid());

		/* Rewrite window n % r with version n+1: the pattern moves on. */
		uint64_t first = (n % r) * WINDOW;
		for (uint64_t p = first; p < first + WINDOW; p++)
			fill_page(area, p, n + 1);

		sleep_ms(100);
	}
}
