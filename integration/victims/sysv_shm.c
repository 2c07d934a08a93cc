/*
 * sysv_shm: System V shared memory shared by a parent and its child.
 *
 * usage: sysv_shm
 *
 * Segments (the parent creates them, then forks the child):
 *   A  keyed, SEG_PAGES pages + A_TAIL bytes; pages 3, 6, 9, ... hold a pattern, the bytes past the
 *      last whole page another, the other pages are never touched (holes). Word 0 of page 0 is the
 *      parent's tick counter, word 1 the child's. The parent attaches it read-write and makes pages
 *      10-11 of its attach read-only (three VMAs); the child inherits that attach and attaches A a
 *      second time at another address, through which it writes its counter.
 *   B  IPC_PRIVATE, B_PAGES pages of pattern, attached SHM_RDONLY by the parent, twice: the second
 *      attach without its first page (munmap), so its one VMA starts at an offset into the segment.
 *   C  IPC_PRIVATE, C_PAGES pages of pattern, marked IPC_RMID while attached (by the parent, the child
 *      inherits the attach); word 0 of page 0 mirrors the parent's counter.
 *
 * Every tick the parent checks all patterns, that it sees the child's counter never go back, that A
 * still has its key and size and C is marked for destruction, then bumps its counter; the child checks
 * the patterns through its own attach, that both its attaches are one segment and that the parent's
 * counter never goes back, then bumps its own. Anything wrong is a FAIL.
 *
 * Output:  ready sysv a=<id> b=<id> c=<id> key=<hex> child=<pid>
 *          tick <n> child=<child counter seen>          (parent, every ~100 ms)
 *          child tick <n> parent=<parent counter seen>  (child, every ~100 ms)
 */
#include "victim.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>

#define PG 4096ul
#define SEG_PAGES 16
#define A_TAIL 100
#define B_PAGES 4
#define C_PAGES 8

static unsigned char a_byte(unsigned long p) { return (unsigned char)(0xa0 + p); }
static unsigned char b_byte(unsigned long p) { return (unsigned char)(0xb0 + p); }
static unsigned char c_byte(unsigned long p) { return (unsigned char)(0xc0 + p); }

/* The parts of A past the counters: pattern pages, holes and the tail. */
static void check_a(const unsigned char *a, const char *who)
{
	for (unsigned long p = 1; p < SEG_PAGES; p++) {
		unsigned char want = p % 3 == 0 ? a_byte(p) : 0;

		if (a[p * PG] != want || a[p * PG + PG - 1] != want)
			fail("%s: segment A page %lu holds %#x want %#x", who, p, a[p * PG], want);
	}
	for (unsigned long i = 0; i < A_TAIL; i++)
		if (a[SEG_PAGES * PG + i] != 0x77)
			fail("%s: segment A tail byte %lu holds %#x", who, i, a[SEG_PAGES * PG + i]);
}

static void check_pattern(const unsigned char *s, unsigned long from, unsigned long pages,
			  unsigned char (*byte)(unsigned long), const char *what)
{
	for (unsigned long p = from; p < pages; p++)
		if (s[p * PG] != byte(p) || s[p * PG + PG / 2] != byte(p) || s[p * PG + PG - 1] != byte(p))
			fail("%s page %lu holds %#x want %#x", what, p, s[p * PG], byte(p));
}

static void *attach(int id, int flags)
{
	void *p = shmat(id, NULL, flags);

	if (p == (void *)-1)
		fail("shmat %d: %s", id, strerror(errno));
	return p;
}

static void child(int a_id, volatile uint64_t *inherited, const unsigned char *c)
{
	volatile uint64_t *a = attach(a_id, 0);
	uint64_t seen = 0, cseen = 0;

	if ((void *)a == (void *)inherited)
		fail("child: second attach of A at the first one's address");
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (unsigned long n = 0;; n++) {
		uint64_t parent = a[0], mirror = *(volatile uint64_t *)c;

		if (getppid() == 1)
			exit(0);
		check_a((const unsigned char *)a, "child");
		check_pattern(c, 1, C_PAGES, c_byte, "child: segment C");
		if (parent < seen)
			fail("child: parent counter went back from %lu to %lu", (unsigned long)seen, (unsigned long)parent);
		if (mirror < cseen)
			fail("child: segment C counter went back from %lu to %lu", (unsigned long)cseen, (unsigned long)mirror);
		seen = parent;
		cseen = mirror;
		if (a[1] != n)
			fail("child: own counter %lu want %lu", (unsigned long)a[1], n);
		a[1] = n + 1;
		if (inherited[1] != n + 1)
			fail("child: the inherited attach of A shows %lu, the second one %lu", (unsigned long)inherited[1], n + 1);
		say("child tick %lu parent=%lu", n, (unsigned long)parent);
		sleep_ms(100);
	}
}

int main(void)
{
	key_t key = (key_t)(0x4c5a0000 | (getpid() & 0xffff));
	int a_id, b_id, c_id;
	unsigned char *a, *b, *b2, *c;
	struct shmid_ds ds;
	uint64_t seen = 0;
	pid_t pid;

	a_id = shmget(key, SEG_PAGES * PG + A_TAIL, IPC_CREAT | IPC_EXCL | 0640);
	b_id = shmget(IPC_PRIVATE, B_PAGES * PG, IPC_CREAT | 0600);
	c_id = shmget(IPC_PRIVATE, C_PAGES * PG, IPC_CREAT | 0600);
	if (a_id < 0 || b_id < 0 || c_id < 0)
		fail("shmget: %s", strerror(errno));
	a = attach(a_id, 0);
	for (unsigned long p = 3; p < SEG_PAGES; p += 3)
		memset(a + p * PG, a_byte(p), PG);
	memset(a + SEG_PAGES * PG, 0x77, A_TAIL);
	if (mprotect(a + 10 * PG, 2 * PG, PROT_READ) < 0)
		fail("mprotect: %s", strerror(errno));
	b = attach(b_id, 0);
	for (unsigned long p = 0; p < B_PAGES; p++)
		memset(b + p * PG, b_byte(p), PG);
	if (shmdt(b) < 0)
		fail("shmdt: %s", strerror(errno));
	b = attach(b_id, SHM_RDONLY);
	b2 = attach(b_id, SHM_RDONLY);
	if (munmap(b2, PG) < 0)
		fail("munmap: %s", strerror(errno));
	c = attach(c_id, 0);
	for (unsigned long p = 1; p < C_PAGES; p++)
		memset(c + p * PG, c_byte(p), PG);
	if (shmctl(c_id, IPC_RMID, NULL) < 0)
		fail("IPC_RMID: %s", strerror(errno));

	pid = fork();
	if (pid < 0)
		fail("fork: %s", strerror(errno));
	if (pid == 0)
		child(a_id, (volatile uint64_t *)a, c);
	say("ready sysv a=%d b=%d c=%d key=%x child=%d", a_id, b_id, c_id, (unsigned)key, (int)pid);
	for (unsigned long n = 0;; n++) {
		volatile uint64_t *w = (volatile uint64_t *)a;
		uint64_t kid = w[1];

		check_a(a, "parent");
		check_pattern(b, 0, B_PAGES, b_byte, "parent: read-only segment B");
		check_pattern(b2, 1, B_PAGES, b_byte, "parent: second attach of B");
		check_pattern(c, 1, C_PAGES, c_byte, "parent: segment C");
		if (w[0] != n)
			fail("parent: own counter %lu want %lu", (unsigned long)w[0], n);
		if (*(volatile uint64_t *)c != n)
			fail("parent: segment C counter %lu want %lu", (unsigned long)*(volatile uint64_t *)c, n);
		if (kid < seen)
			fail("parent: child counter went back from %lu to %lu", (unsigned long)seen, (unsigned long)kid);
		seen = kid;
		if (shmctl(a_id, IPC_STAT, &ds) < 0 || ds.shm_perm.__key != key || ds.shm_segsz != SEG_PAGES * PG + A_TAIL)
			fail("segment A: %s, key %#x size %zu", strerror(errno), (unsigned)ds.shm_perm.__key, (size_t)ds.shm_segsz);
		if (shmctl(c_id, IPC_STAT, &ds) < 0 || !(ds.shm_perm.mode & SHM_DEST) || ds.shm_perm.__key != IPC_PRIVATE)
			fail("segment C: %s, mode %#o key %#x, want marked for destruction",
			     strerror(errno), (unsigned)ds.shm_perm.mode, (unsigned)ds.shm_perm.__key);
		w[0] = n + 1;
		*(volatile uint64_t *)c = n + 1;
		say("tick %lu child=%lu", n, (unsigned long)kid);
		sleep_ms(100);
	}
}
