/*
 * fpu: program state that lives only in FPU/vector registers while a long
 * loop without calls runs, so a dump lands with live register state most of
 * the time and a restore must bring back the whole extended state (XSAVE):
 * x87 stack and control word, MXCSR, ymm0-15, and, on CPUs with AVX-512F,
 * zmm0-31 (all 512 bits) and the opmask registers k1-k7.
 *
 * usage: fpu [round_ms=100] [kinds=both|avx2|avx512]
 *
 * A round loads known values into the registers, runs an asm loop of ITERS
 * iterations (each adds a constant vector to every vector register, adds
 * st(1) to st(0), adds r9 to r8 and, in the AVX-512 kind, flips k1), then
 * stores everything and compares with values computed in C. With kinds=both,
 * rounds alternate between the AVX2 kind and (if the CPU has it) the AVX-512
 * kind; a test that must know which kind a dump hits runs one kind only. Inputs,
 * MXCSR rounding mode and x87 control word change from round to round so a
 * stale or zeroed register never matches by accident.
 *
 * Output:  fpu start kinds=<k> avx2=<0|1> avx512=<0|1> iters2=<n> iters512=<n> pid=<pid>
 *              loop2=<lo>-<hi> loop512=<lo>-<hi>     (on one line)
 *          fpu ok <round> kind=<avx2|avx512>
 *          FAIL fpu ...                              (on any mismatch)
 *
 * The asm is spelled out one instruction per register (no macros, no
 * .rept), so what runs is what you read. Offsets are the
 * struct fpu_io layout, checked by the static asserts.
 */
#include "victim.h"

#include <cpuid.h>
#include <stddef.h>

struct fpu_io {
	uint64_t iters;        /*   0 */
	uint64_t gpr_in[4];    /*   8: r8-r11 */
	uint64_t gpr_out[4];   /*  40 */
	uint32_t mxcsr_in;     /*  72 */
	uint32_t mxcsr_out;    /*  76 */
	uint16_t fcw_in;       /*  80 */
	uint16_t fcw_out;      /*  82 */
	uint16_t k_in[8];      /*  84: k0 unused */
	uint16_t k_out[8];     /* 100 */
	uint8_t pad[12];       /* 116 */
	double x87_in[8];      /* 128: in[0] ends in st(0) */
	double x87_out[8];     /* 192 */
	uint64_t vec_in[32][8];  /*  256: 64 bytes per register */
	uint64_t vec_out[32][8]; /* 2304 */
};

_Static_assert(offsetof(struct fpu_io, gpr_out) == 40, "layout");
_Static_assert(offsetof(struct fpu_io, mxcsr_in) == 72, "layout");
_Static_assert(offsetof(struct fpu_io, fcw_in) == 80, "layout");
_Static_assert(offsetof(struct fpu_io, k_in) == 84, "layout");
_Static_assert(offsetof(struct fpu_io, k_out) == 100, "layout");
_Static_assert(offsetof(struct fpu_io, x87_in) == 128, "layout");
_Static_assert(offsetof(struct fpu_io, x87_out) == 192, "layout");
_Static_assert(offsetof(struct fpu_io, vec_in) == 256, "layout");
_Static_assert(offsetof(struct fpu_io, vec_out) == 2304, "layout");

void fpu_avx2_round(struct fpu_io *io);
void fpu_avx512_round(struct fpu_io *io);
extern const char fpu_avx2_loop[], fpu_avx2_loop_end[];
extern const char fpu_avx512_loop[], fpu_avx512_loop_end[];

/*
 * Both functions follow the SysV ABI: every vector, opmask and x87 register
 * is caller-saved, r8-r11 and rcx are scratch, and the x87 stack is empty
 * and MXCSR / x87 control word are at their defaults again on return.
 */
__asm__(
	".section .rodata\n"
	"fpu_default_mxcsr: .long 0x1f80\n"
	"fpu_default_fcw: .short 0x037f\n"
	".globl fpu_avx2_loop, fpu_avx2_loop_end, fpu_avx512_loop, fpu_avx512_loop_end\n"
	".text\n"
	".globl fpu_avx2_round\n"
	".type fpu_avx2_round, @function\n"
	"fpu_avx2_round:\n"
	"\tldmxcsr 72(%rdi)\n"
	"\tfldcw 80(%rdi)\n"
	"\tfldl 184(%rdi)\n"
	"\tfldl 176(%rdi)\n"
	"\tfldl 168(%rdi)\n"
	"\tfldl 160(%rdi)\n"
	"\tfldl 152(%rdi)\n"
	"\tfldl 144(%rdi)\n"
	"\tfldl 136(%rdi)\n"
	"\tfldl 128(%rdi)\n"
	"\tmovq 8(%rdi), %r8\n"
	"\tmovq 16(%rdi), %r9\n"
	"\tmovq 24(%rdi), %r10\n"
	"\tmovq 32(%rdi), %r11\n"
	"\tvmovdqu 256(%rdi), %ymm0\n"
	"\tvmovdqu 320(%rdi), %ymm1\n"
	"\tvmovdqu 384(%rdi), %ymm2\n"
	"\tvmovdqu 448(%rdi), %ymm3\n"
	"\tvmovdqu 512(%rdi), %ymm4\n"
	"\tvmovdqu 576(%rdi), %ymm5\n"
	"\tvmovdqu 640(%rdi), %ymm6\n"
	"\tvmovdqu 704(%rdi), %ymm7\n"
	"\tvmovdqu 768(%rdi), %ymm8\n"
	"\tvmovdqu 832(%rdi), %ymm9\n"
	"\tvmovdqu 896(%rdi), %ymm10\n"
	"\tvmovdqu 960(%rdi), %ymm11\n"
	"\tvmovdqu 1024(%rdi), %ymm12\n"
	"\tvmovdqu 1088(%rdi), %ymm13\n"
	"\tvmovdqu 1152(%rdi), %ymm14\n"
	"\tvmovdqu 1216(%rdi), %ymm15\n"
	"\tmovq (%rdi), %rcx\n"
	"fpu_avx2_loop:\n"
	"\tvpaddq %ymm15, %ymm0, %ymm0\n"
	"\tvpaddq %ymm15, %ymm1, %ymm1\n"
	"\tvpaddq %ymm15, %ymm2, %ymm2\n"
	"\tvpaddq %ymm15, %ymm3, %ymm3\n"
	"\tvpaddq %ymm15, %ymm4, %ymm4\n"
	"\tvpaddq %ymm15, %ymm5, %ymm5\n"
	"\tvpaddq %ymm15, %ymm6, %ymm6\n"
	"\tvpaddq %ymm15, %ymm7, %ymm7\n"
	"\tvpaddq %ymm15, %ymm8, %ymm8\n"
	"\tvpaddq %ymm15, %ymm9, %ymm9\n"
	"\tvpaddq %ymm15, %ymm10, %ymm10\n"
	"\tvpaddq %ymm15, %ymm11, %ymm11\n"
	"\tvpaddq %ymm15, %ymm12, %ymm12\n"
	"\tvpaddq %ymm15, %ymm13, %ymm13\n"
	"\tvpaddq %ymm15, %ymm14, %ymm14\n"
	"\tfadd %st(1), %st\n"
	"\taddq %r9, %r8\n"
	"\tdecq %rcx\n"
	"\tjnz fpu_avx2_loop\n"
	"fpu_avx2_loop_end:\n"
	"\tvmovdqu %ymm0, 2304(%rdi)\n"
	"\tvmovdqu %ymm1, 2368(%rdi)\n"
	"\tvmovdqu %ymm2, 2432(%rdi)\n"
	"\tvmovdqu %ymm3, 2496(%rdi)\n"
	"\tvmovdqu %ymm4, 2560(%rdi)\n"
	"\tvmovdqu %ymm5, 2624(%rdi)\n"
	"\tvmovdqu %ymm6, 2688(%rdi)\n"
	"\tvmovdqu %ymm7, 2752(%rdi)\n"
	"\tvmovdqu %ymm8, 2816(%rdi)\n"
	"\tvmovdqu %ymm9, 2880(%rdi)\n"
	"\tvmovdqu %ymm10, 2944(%rdi)\n"
	"\tvmovdqu %ymm11, 3008(%rdi)\n"
	"\tvmovdqu %ymm12, 3072(%rdi)\n"
	"\tvmovdqu %ymm13, 3136(%rdi)\n"
	"\tvmovdqu %ymm14, 3200(%rdi)\n"
	"\tvmovdqu %ymm15, 3264(%rdi)\n"
	"\tmovq %r8, 40(%rdi)\n"
	"\tmovq %r9, 48(%rdi)\n"
	"\tmovq %r10, 56(%rdi)\n"
	"\tmovq %r11, 64(%rdi)\n"
	"\tfstpl 192(%rdi)\n"
	"\tfstpl 200(%rdi)\n"
	"\tfstpl 208(%rdi)\n"
	"\tfstpl 216(%rdi)\n"
	"\tfstpl 224(%rdi)\n"
	"\tfstpl 232(%rdi)\n"
	"\tfstpl 240(%rdi)\n"
	"\tfstpl 248(%rdi)\n"
	"\tfnstcw 82(%rdi)\n"
	"\tstmxcsr 76(%rdi)\n"
	"\tldmxcsr fpu_default_mxcsr(%rip)\n"
	"\tfldcw fpu_default_fcw(%rip)\n"
	"\tvzeroupper\n"
	"\tret\n"
	".size fpu_avx2_round, .-fpu_avx2_round\n"
	".text\n"
	".globl fpu_avx512_round\n"
	".type fpu_avx512_round, @function\n"
	"fpu_avx512_round:\n"
	"\tldmxcsr 72(%rdi)\n"
	"\tfldcw 80(%rdi)\n"
	"\tfldl 184(%rdi)\n"
	"\tfldl 176(%rdi)\n"
	"\tfldl 168(%rdi)\n"
	"\tfldl 160(%rdi)\n"
	"\tfldl 152(%rdi)\n"
	"\tfldl 144(%rdi)\n"
	"\tfldl 136(%rdi)\n"
	"\tfldl 128(%rdi)\n"
	"\tmovq 8(%rdi), %r8\n"
	"\tmovq 16(%rdi), %r9\n"
	"\tmovq 24(%rdi), %r10\n"
	"\tmovq 32(%rdi), %r11\n"
	"\tvmovdqu64 256(%rdi), %zmm0\n"
	"\tvmovdqu64 320(%rdi), %zmm1\n"
	"\tvmovdqu64 384(%rdi), %zmm2\n"
	"\tvmovdqu64 448(%rdi), %zmm3\n"
	"\tvmovdqu64 512(%rdi), %zmm4\n"
	"\tvmovdqu64 576(%rdi), %zmm5\n"
	"\tvmovdqu64 640(%rdi), %zmm6\n"
	"\tvmovdqu64 704(%rdi), %zmm7\n"
	"\tvmovdqu64 768(%rdi), %zmm8\n"
	"\tvmovdqu64 832(%rdi), %zmm9\n"
	"\tvmovdqu64 896(%rdi), %zmm10\n"
	"\tvmovdqu64 960(%rdi), %zmm11\n"
	"\tvmovdqu64 1024(%rdi), %zmm12\n"
	"\tvmovdqu64 1088(%rdi), %zmm13\n"
	"\tvmovdqu64 1152(%rdi), %zmm14\n"
	"\tvmovdqu64 1216(%rdi), %zmm15\n"
	"\tvmovdqu64 1280(%rdi), %zmm16\n"
	"\tvmovdqu64 1344(%rdi), %zmm17\n"
	"\tvmovdqu64 1408(%rdi), %zmm18\n"
	"\tvmovdqu64 1472(%rdi), %zmm19\n"
	"\tvmovdqu64 1536(%rdi), %zmm20\n"
	"\tvmovdqu64 1600(%rdi), %zmm21\n"
	"\tvmovdqu64 1664(%rdi), %zmm22\n"
	"\tvmovdqu64 1728(%rdi), %zmm23\n"
	"\tvmovdqu64 1792(%rdi), %zmm24\n"
	"\tvmovdqu64 1856(%rdi), %zmm25\n"
	"\tvmovdqu64 1920(%rdi), %zmm26\n"
	"\tvmovdqu64 1984(%rdi), %zmm27\n"
	"\tvmovdqu64 2048(%rdi), %zmm28\n"
	"\tvmovdqu64 2112(%rdi), %zmm29\n"
	"\tvmovdqu64 2176(%rdi), %zmm30\n"
	"\tvmovdqu64 2240(%rdi), %zmm31\n"
	"\tkmovw 86(%rdi), %k1\n"
	"\tkmovw 88(%rdi), %k2\n"
	"\tkmovw 90(%rdi), %k3\n"
	"\tkmovw 92(%rdi), %k4\n"
	"\tkmovw 94(%rdi), %k5\n"
	"\tkmovw 96(%rdi), %k6\n"
	"\tkmovw 98(%rdi), %k7\n"
	"\tmovq (%rdi), %rcx\n"
	"fpu_avx512_loop:\n"
	"\tvpaddq %zmm31, %zmm0, %zmm0\n"
	"\tvpaddq %zmm31, %zmm1, %zmm1\n"
	"\tvpaddq %zmm31, %zmm2, %zmm2\n"
	"\tvpaddq %zmm31, %zmm3, %zmm3\n"
	"\tvpaddq %zmm31, %zmm4, %zmm4\n"
	"\tvpaddq %zmm31, %zmm5, %zmm5\n"
	"\tvpaddq %zmm31, %zmm6, %zmm6\n"
	"\tvpaddq %zmm31, %zmm7, %zmm7\n"
	"\tvpaddq %zmm31, %zmm8, %zmm8\n"
	"\tvpaddq %zmm31, %zmm9, %zmm9\n"
	"\tvpaddq %zmm31, %zmm10, %zmm10\n"
	"\tvpaddq %zmm31, %zmm11, %zmm11\n"
	"\tvpaddq %zmm31, %zmm12, %zmm12\n"
	"\tvpaddq %zmm31, %zmm13, %zmm13\n"
	"\tvpaddq %zmm31, %zmm14, %zmm14\n"
	"\tvpaddq %zmm31, %zmm15, %zmm15\n"
	"\tvpaddq %zmm31, %zmm16, %zmm16\n"
	"\tvpaddq %zmm31, %zmm17, %zmm17\n"
	"\tvpaddq %zmm31, %zmm18, %zmm18\n"
	"\tvpaddq %zmm31, %zmm19, %zmm19\n"
	"\tvpaddq %zmm31, %zmm20, %zmm20\n"
	"\tvpaddq %zmm31, %zmm21, %zmm21\n"
	"\tvpaddq %zmm31, %zmm22, %zmm22\n"
	"\tvpaddq %zmm31, %zmm23, %zmm23\n"
	"\tvpaddq %zmm31, %zmm24, %zmm24\n"
	"\tvpaddq %zmm31, %zmm25, %zmm25\n"
	"\tvpaddq %zmm31, %zmm26, %zmm26\n"
	"\tvpaddq %zmm31, %zmm27, %zmm27\n"
	"\tvpaddq %zmm31, %zmm28, %zmm28\n"
	"\tvpaddq %zmm31, %zmm29, %zmm29\n"
	"\tvpaddq %zmm31, %zmm30, %zmm30\n"
	"\tknotw %k1, %k1\n"
	"\tfadd %st(1), %st\n"
	"\taddq %r9, %r8\n"
	"\tdecq %rcx\n"
	"\tjnz fpu_avx512_loop\n"
	"fpu_avx512_loop_end:\n"
	"\tvmovdqu64 %zmm0, 2304(%rdi)\n"
	"\tvmovdqu64 %zmm1, 2368(%rdi)\n"
	"\tvmovdqu64 %zmm2, 2432(%rdi)\n"
	"\tvmovdqu64 %zmm3, 2496(%rdi)\n"
	"\tvmovdqu64 %zmm4, 2560(%rdi)\n"
	"\tvmovdqu64 %zmm5, 2624(%rdi)\n"
	"\tvmovdqu64 %zmm6, 2688(%rdi)\n"
	"\tvmovdqu64 %zmm7, 2752(%rdi)\n"
	"\tvmovdqu64 %zmm8, 2816(%rdi)\n"
	"\tvmovdqu64 %zmm9, 2880(%rdi)\n"
	"\tvmovdqu64 %zmm10, 2944(%rdi)\n"
	"\tvmovdqu64 %zmm11, 3008(%rdi)\n"
	"\tvmovdqu64 %zmm12, 3072(%rdi)\n"
	"\tvmovdqu64 %zmm13, 3136(%rdi)\n"
	"\tvmovdqu64 %zmm14, 3200(%rdi)\n"
	"\tvmovdqu64 %zmm15, 3264(%rdi)\n"
	"\tvmovdqu64 %zmm16, 3328(%rdi)\n"
	"\tvmovdqu64 %zmm17, 3392(%rdi)\n"
	"\tvmovdqu64 %zmm18, 3456(%rdi)\n"
	"\tvmovdqu64 %zmm19, 3520(%rdi)\n"
	"\tvmovdqu64 %zmm20, 3584(%rdi)\n"
	"\tvmovdqu64 %zmm21, 3648(%rdi)\n"
	"\tvmovdqu64 %zmm22, 3712(%rdi)\n"
	"\tvmovdqu64 %zmm23, 3776(%rdi)\n"
	"\tvmovdqu64 %zmm24, 3840(%rdi)\n"
	"\tvmovdqu64 %zmm25, 3904(%rdi)\n"
	"\tvmovdqu64 %zmm26, 3968(%rdi)\n"
	"\tvmovdqu64 %zmm27, 4032(%rdi)\n"
	"\tvmovdqu64 %zmm28, 4096(%rdi)\n"
	"\tvmovdqu64 %zmm29, 4160(%rdi)\n"
	"\tvmovdqu64 %zmm30, 4224(%rdi)\n"
	"\tvmovdqu64 %zmm31, 4288(%rdi)\n"
	"\tkmovw %k1, 102(%rdi)\n"
	"\tkmovw %k2, 104(%rdi)\n"
	"\tkmovw %k3, 106(%rdi)\n"
	"\tkmovw %k4, 108(%rdi)\n"
	"\tkmovw %k5, 110(%rdi)\n"
	"\tkmovw %k6, 112(%rdi)\n"
	"\tkmovw %k7, 114(%rdi)\n"
	"\tmovq %r8, 40(%rdi)\n"
	"\tmovq %r9, 48(%rdi)\n"
	"\tmovq %r10, 56(%rdi)\n"
	"\tmovq %r11, 64(%rdi)\n"
	"\tfstpl 192(%rdi)\n"
	"\tfstpl 200(%rdi)\n"
	"\tfstpl 208(%rdi)\n"
	"\tfstpl 216(%rdi)\n"
	"\tfstpl 224(%rdi)\n"
	"\tfstpl 232(%rdi)\n"
	"\tfstpl 240(%rdi)\n"
	"\tfstpl 248(%rdi)\n"
	"\tfnstcw 82(%rdi)\n"
	"\tstmxcsr 76(%rdi)\n"
	"\tldmxcsr fpu_default_mxcsr(%rip)\n"
	"\tfldcw fpu_default_fcw(%rip)\n"
	"\tvzeroupper\n"
	"\tret\n"
	".size fpu_avx512_round, .-fpu_avx512_round\n"
);

static int has_avx2, has_avx512;

static void detect(void)
{
	unsigned a, b, c, d;

	if (!__get_cpuid(1, &a, &b, &c, &d))
		return;
	int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
	if (!osxsave || !avx)
		return;
	unsigned lo, hi;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	(void)hi;
	if ((lo & 0x6) != 0x6) /* SSE and AVX state enabled by the OS */
		return;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return;
	has_avx2 = (b >> 5) & 1;
	/* AVX-512F, and opmask + ZMM_Hi256 + Hi16_ZMM state enabled by the OS. */
	has_avx512 = has_avx2 && ((b >> 16) & 1) && (lo & 0xe0) == 0xe0;
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 31;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 29;
	return x;
}

static void setup(struct fpu_io *io, unsigned long round, uint64_t iters)
{
	memset(io, 0, sizeof(*io));
	io->iters = iters;
	for (int i = 0; i < 4; i++)
		io->gpr_in[i] = mix(round * 16 + i + 1);
	/* Rounding toward zero / down alternate; exceptions stay masked. */
	io->mxcsr_in = (round & 1) ? 0x7f80 : 0x3f80;
	io->fcw_in = (round & 1) ? 0x0f7f : 0x077f;
	for (int k = 1; k < 8; k++)
		io->k_in[k] = (uint16_t)mix(round * 8 + k + 100);
	/* Small dyadic values: every x87 result below is exact in any rounding mode. */
	io->x87_in[0] = (double)round * 1000.0 + 0.25;
	io->x87_in[1] = 0.5;
	for (int i = 2; i < 8; i++)
		io->x87_in[i] = (double)round + i * 1.125;
	for (int r = 0; r < 32; r++)
		for (int l = 0; l < 8; l++)
			io->vec_in[r][l] = mix(round * 4096 + r * 8 + l + 7);
}

#define CHECK(cond, ...)                                                 \
	do {                                                             \
		if (!(cond))                                             \
			fail("fpu round=%lu kind=%s " __VA_ARGS__);      \
	} while (0)

static void check(const struct fpu_io *io, unsigned long round, int avx512)
{
	const char *kind = avx512 ? "avx512" : "avx2";
	int nregs = avx512 ? 32 : 16, lanes = avx512 ? 8 : 4;
	uint64_t n = io->iters;

	for (int r = 0; r < nregs; r++)
		for (int l = 0; l < lanes; l++) {
			uint64_t want = io->vec_in[r][l];
			if (r != nregs - 1)
				want += n * io->vec_in[nregs - 1][l];
			CHECK(io->vec_out[r][l] == want, "reg=%s%d lane=%d got=%016lx want=%016lx",
			      round, kind, avx512 ? "zmm" : "ymm", r, l,
			      (unsigned long)io->vec_out[r][l], (unsigned long)want);
		}
	if (avx512)
		for (int k = 1; k < 8; k++) {
			uint16_t want = io->k_in[k];
			if (k == 1 && (n & 1))
				want = (uint16_t)~want;
			CHECK(io->k_out[k] == want, "reg=k%d got=%04x want=%04x", round, kind, k,
			      io->k_out[k], want);
		}
	for (int i = 0; i < 8; i++) {
		double want = io->x87_in[i];
		if (i == 0)
			want += (double)n * io->x87_in[1];
		CHECK(io->x87_out[i] == want, "reg=st%d got=%a want=%a", round, kind, i,
		      io->x87_out[i], want);
	}
	uint64_t r8 = io->gpr_in[0] + n * io->gpr_in[1];
	CHECK(io->gpr_out[0] == r8, "reg=r8 got=%016lx want=%016lx", round, kind,
	      (unsigned long)io->gpr_out[0], (unsigned long)r8);
	for (int i = 1; i < 4; i++)
		CHECK(io->gpr_out[i] == io->gpr_in[i], "reg=r%d got=%016lx want=%016lx", round, kind,
		      8 + i, (unsigned long)io->gpr_out[i], (unsigned long)io->gpr_in[i]);
	CHECK(io->mxcsr_out == io->mxcsr_in, "reg=mxcsr got=%#x want=%#x", round, kind,
	      io->mxcsr_out, io->mxcsr_in);
	CHECK(io->fcw_out == io->fcw_in, "reg=fcw got=%#x want=%#x", round, kind, io->fcw_out,
	      io->fcw_in);
}

/* Iterations that make one round last about ms milliseconds. */
static uint64_t calibrate(struct fpu_io *io, int avx512, long ms)
{
	const uint64_t probe = 1 << 20;

	setup(io, 0, probe);
	uint64_t t0 = now_ns();
	if (avx512)
		fpu_avx512_round(io);
	else
		fpu_avx2_round(io);
	uint64_t el = now_ns() - t0;
	check(io, 0, avx512);
	if (el == 0)
		el = 1;
	uint64_t iters = probe * (uint64_t)ms * 1000000ull / el;
	return iters < 1024 ? 1024 : iters;
}

int main(int argc, char **argv)
{
	static struct fpu_io io __attribute__((aligned(64)));
	long ms = arg_long(argc, argv, 1, 100);
	const char *kinds = argc > 2 ? argv[2] : "both";
	uint64_t iters2, iters512 = 0;
	int run2, run512;

	detect();
	if (!has_avx2)
		fail("fpu: CPU or OS lacks AVX2");
	if (strcmp(kinds, "both") == 0) {
		run2 = 1;
		run512 = has_avx512;
	} else if (strcmp(kinds, "avx2") == 0) {
		run2 = 1;
		run512 = 0;
	} else if (strcmp(kinds, "avx512") == 0) {
		if (!has_avx512)
			fail("fpu: CPU or OS lacks AVX-512F");
		run2 = 0;
		run512 = 1;
	} else {
		say("usage: fpu [round_ms] [both|avx2|avx512]");
		return 2;
	}
	iters2 = calibrate(&io, 0, ms);
	if (has_avx512)
		iters512 = calibrate(&io, 1, ms);
	say("fpu start kinds=%s avx2=%d avx512=%d iters2=%lu iters512=%lu pid=%d loop2=%p-%p loop512=%p-%p",
	    kinds, has_avx2, has_avx512, (unsigned long)iters2, (unsigned long)iters512, getpid(),
	    (const void *)fpu_avx2_loop, (const void *)fpu_avx2_loop_end,
	    (const void *)fpu_avx512_loop, (const void *)fpu_avx512_loop_end);

	for (unsigned long round = 1;; round++) {
		int avx512 = run512 && (!run2 || (round & 1));

		setup(&io, round, avx512 ? iters512 : iters2);
		if (avx512)
			fpu_avx512_round(&io);
		else
			fpu_avx2_round(&io);
		check(&io, round, avx512);
		say("fpu ok %lu kind=%s", round, avx512 ? "avx512" : "avx2");
		/* A short pause lets the machine breathe; the asm loop still gets
		 * ~90% of the time, so that is where a dump usually lands. */
		sleep_ms(ms / 10);
	}
}
