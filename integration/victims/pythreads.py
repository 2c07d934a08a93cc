"""pythreads: a Python 3 program whose threads compute and print.

usage: python3 pythreads.py [threads=3]

Thread i computes a hash chain: h_0 = sha256(b"py-<i>"), h_(n+1) =
sha256(h_n + n as 8 bytes big-endian), and prints the first 16 hex digits
of h_n at tick n, so the test can recompute every printed value. Each thread
also keeps 1 MiB of data derived from its index, and a list of 50 000
integers, and checks every tick that both are unchanged (their sha256 and
sum were taken at start). A lock-protected total counts all ticks; the main
thread checks that the per-thread counts add up to it.

Every line goes out with one os.write (no buffering), like the C victims.
A corrupted state prints a line starting with "FAIL" and exits with 1.

Output:  pythreads pid=<pid> threads=<N>
         py <i> tick <n> h=<16 hex digits>      (every 100 ms per thread)
         main tick <n> total=<sum>              (every 100 ms)
"""

import hashlib
import os
import sys
import threading
import time


def say(line):
    os.write(1, (line + "\n").encode())


def fail(line):
    say("FAIL " + line)
    os._exit(1)


lock = threading.Lock()
counts = {}
total = 0


def worker(i):
    global total
    h = hashlib.sha256(b"py-%d" % i).digest()
    data = hashlib.shake_256(b"data-%d" % i).digest(1 << 20)
    data_sum = hashlib.sha256(data).hexdigest()
    ints = list(range(i * 1000, i * 1000 + 50000))
    ints_sum = sum(ints)
    n = 0
    while True:
        if hashlib.sha256(data).hexdigest() != data_sum:
            fail("py %d tick %d: data changed" % (i, n))
        if sum(ints) != ints_sum or len(ints) != 50000:
            fail("py %d tick %d: list changed" % (i, n))
        say("py %d tick %d h=%s" % (i, n, h.hex()[:16]))
        h = hashlib.sha256(h + n.to_bytes(8, "big")).digest()
        n += 1
        with lock:
            counts[i] = counts.get(i, 0) + 1
            total += 1
        time.sleep(0.1)


def main():
    nthreads = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    say("pythreads pid=%d threads=%d" % (os.getpid(), nthreads))
    for i in range(nthreads):
        threading.Thread(target=worker, args=(i,), daemon=True).start()
    n = 0
    while True:
        with lock:
            s, t = sum(counts.values()), total
        if s != t:
            fail("main tick %d: counts add up to %d, total %d" % (n, s, t))
        say("main tick %d total=%d" % (n, t))
        n += 1
        time.sleep(0.1)


main()
