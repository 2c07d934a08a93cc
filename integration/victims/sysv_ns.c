/*
 * sysv_ns: System V IPC of an IPC namespace of its own; run it as the init of fresh PID, IPC and UTS
 * namespaces (unshare -pfiu).
 *
 * usage: sysv_ns
 *
 * It sets the host name and, in its IPC namespace, kernel.shmmni and kernel.msgmax. Then it makes:
 *   Z  the namespace's first segment, so id 0, of one page, attached;
 *   S  a segment of S_PAGES pages with a pattern and its tick counter in word 0, attached, with an id
 *      asked for through kernel.shm_next_id;
 *   U  a keyed segment of U_PAGES pages with a pattern, not attached by anyone;
 *   Q  a message queue holding two messages (sizes not multiples of 8);
 *   M  a set of three semaphores with values.
 * Last it asks for the id of a next semaphore set (kernel.sem_next_id) that it never makes.
 * Every tick it checks all of it: contents, ids (keyed objects found again by key), the sysctls, the
 * host name, the queue's messages (copied with MSG_COPY, left queued) and the semaphore values.
 *
 * Output:  ready ipcns shm=<id> unattached=<id> msq=<id> sem=<id> pid=<pid>
 *          tick <n> ipc ok shm=<id> shmmni=<v> msgmax=<v>   (every ~100 ms)
 */
#include "victim.h"

#include <fcntl.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

#define PG 4096ul
#define S_PAGES 8
#define U_PAGES 3
#define S_ID (5 * 32768 + 7) /* sequence 5, slot 7 */
#define U_KEY 0x4c5a0055
#define Q_KEY 0x4c5a0051
#define M_KEY 0x4c5a004d
#define SHMMNI 1234
#define MSGMAX 12345
#define SEM_NEXT 77
#define HOST "lazyr-ipcns"

#ifndef MSG_COPY
#define MSG_COPY 040000
#endif

static const char *msgs[2] = { "hello", "world!!" };
static const long types[2] = { 7, 9 };
static const unsigned short semvals[3] = { 1, 5, 42 };

static void set_sysctl(const char *name, long v)
{
	char path[128], buf[32];
	int fd, n;

	snprintf(path, sizeof(path), "/proc/sys/kernel/%s", name);
	n = snprintf(buf, sizeof(buf), "%ld", v);
	fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, buf, n) != n)
		fail("sysctl %s = %ld: %s", name, v, strerror(errno));
	close(fd);
}

static long get_sysctl(const char *name)
{
	char path[128], buf[32] = { 0 };
	int fd;

	snprintf(path, sizeof(path), "/proc/sys/kernel/%s", name);
	fd = open(path, O_RDONLY);
	if (fd < 0 || read(fd, buf, sizeof(buf) - 1) <= 0)
		fail("sysctl %s: %s", name, strerror(errno));
	close(fd);
	return strtol(buf, NULL, 10);
}

static unsigned char s_byte(unsigned long p) { return (unsigned char)(0x50 + p); }
static unsigned char u_byte(unsigned long p) { return (unsigned char)(0x60 + p); }

int main(void)
{
	struct {
		long mtype;
		char mtext[64];
	} m;
	unsigned short vals[3];
	int s_id, u_id, q_id, sem_id, z_id;
	unsigned char *s, *u, *z;
	char host[64];

	if (getpid() != 1)
		fail("not the init of a PID namespace (pid %d)", getpid());
	if (sethostname(HOST, strlen(HOST)) < 0)
		fail("sethostname: %s", strerror(errno));
	set_sysctl("shmmni", SHMMNI);
	set_sysctl("msgmax", MSGMAX);
	z_id = shmget(IPC_PRIVATE, PG, IPC_CREAT | 0600);
	if (z_id != 0)
		fail("first segment of the namespace got id %d (%s), want 0", z_id, strerror(errno));
	z = shmat(z_id, NULL, 0);
	if (z == (void *)-1)
		fail("shmat Z: %s", strerror(errno));
	z[100] = 0x5a;
	set_sysctl("shm_next_id", S_ID);
	s_id = shmget(IPC_PRIVATE, S_PAGES * PG, IPC_CREAT | 0600);
	if (s_id != S_ID)
		fail("shmget: id %d (%s), asked for %d", s_id, strerror(errno), S_ID);
	s = shmat(s_id, NULL, 0);
	u_id = shmget(U_KEY, U_PAGES * PG, IPC_CREAT | IPC_EXCL | 0644);
	if (s == (void *)-1 || u_id < 0)
		fail("segments: %s", strerror(errno));
	for (unsigned long p = 1; p < S_PAGES; p += 2)
		memset(s + p * PG, s_byte(p), PG);
	u = shmat(u_id, NULL, 0);
	if (u == (void *)-1)
		fail("shmat U: %s", strerror(errno));
	for (unsigned long p = 0; p < U_PAGES; p++)
		memset(u + p * PG, u_byte(p), PG);
	shmdt(u);
	q_id = msgget(Q_KEY, IPC_CREAT | IPC_EXCL | 0600);
	if (q_id < 0)
		fail("msgget: %s", strerror(errno));
	for (int i = 0; i < 2; i++) {
		m.mtype = types[i];
		strcpy(m.mtext, msgs[i]);
		if (msgsnd(q_id, &m, strlen(msgs[i]), IPC_NOWAIT) < 0)
			fail("msgsnd: %s", strerror(errno));
	}
	sem_id = semget(M_KEY, 3, IPC_CREAT | IPC_EXCL | 0600);
	if (sem_id < 0 || semctl(sem_id, 0, SETALL, semvals) < 0)
		fail("semaphores: %s", strerror(errno));
	set_sysctl("sem_next_id", SEM_NEXT);
	say("ready ipcns shm=%d unattached=%d msq=%d sem=%d pid=%d", s_id, u_id, q_id, sem_id, getpid());

	for (unsigned long n = 0;; n++) {
		volatile uint64_t *tick = (volatile uint64_t *)s;
		struct msqid_ds qs;
		struct shmid_ds zs;
		long shmmni = get_sysctl("shmmni"), msgmax = get_sysctl("msgmax");

		if (*tick != n)
			fail("segment S counter %lu want %lu", (unsigned long)*tick, n);
		if (z[100] != 0x5a || shmctl(0, IPC_STAT, &zs) < 0 || zs.shm_nattch != 1)
			fail("segment 0: byte %#x, %s, %lu attaches", z[100], strerror(errno), (unsigned long)zs.shm_nattch);
		for (unsigned long p = 1; p < S_PAGES; p++) {
			unsigned char want = p % 2 ? s_byte(p) : 0;

			if (s[p * PG] != want || s[p * PG + PG - 1] != want)
				fail("segment S page %lu holds %#x want %#x", p, s[p * PG], want);
		}
		if (shmget(U_KEY, 0, 0) != u_id)
			fail("segment U: key %#x now finds %d (%s), want %d", U_KEY, shmget(U_KEY, 0, 0), strerror(errno), u_id);
		u = shmat(u_id, NULL, SHM_RDONLY);
		if (u == (void *)-1)
			fail("shmat U: %s", strerror(errno));
		for (unsigned long p = 0; p < U_PAGES; p++)
			if (u[p * PG] != u_byte(p) || u[p * PG + PG - 1] != u_byte(p))
				fail("segment U page %lu holds %#x", p, u[p * PG]);
		shmdt(u);
		if (shmmni != SHMMNI || msgmax != MSGMAX || get_sysctl("sem_next_id") != SEM_NEXT)
			fail("sysctls shmmni=%ld msgmax=%ld sem_next_id=%ld, want %d, %d and %d",
			     shmmni, msgmax, get_sysctl("sem_next_id"), SHMMNI, MSGMAX, SEM_NEXT);
		if (gethostname(host, sizeof(host)) < 0 || strcmp(host, HOST) != 0)
			fail("host name '%s'", host);
		if (msgget(Q_KEY, 0) != q_id || msgctl(q_id, IPC_STAT, &qs) < 0 || qs.msg_qnum != 2)
			fail("message queue %d: %s, %lu messages", q_id, strerror(errno), (unsigned long)qs.msg_qnum);
		for (int i = 0; i < 2; i++) {
			ssize_t r = msgrcv(q_id, &m, sizeof(m.mtext), i, IPC_NOWAIT | MSG_COPY);

			if (r != (ssize_t)strlen(msgs[i]) || m.mtype != types[i] || memcmp(m.mtext, msgs[i], r) != 0)
				fail("message %d: %zd bytes of type %ld (%s)", i, r, m.mtype, r < 0 ? strerror(errno) : "");
		}
		if (semget(M_KEY, 0, 0) != sem_id || semctl(sem_id, 0, GETALL, vals) < 0 ||
		    memcmp(vals, semvals, sizeof(vals)) != 0)
			fail("semaphores %d: %s, values %u %u %u", sem_id, strerror(errno), vals[0], vals[1], vals[2]);
		*tick = n + 1;
		say("tick %lu ipc ok shm=%d shmmni=%ld msgmax=%ld", n, s_id, shmmni, msgmax);
		sleep_ms(100);
	}
}
