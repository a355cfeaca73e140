/* Make this process see an AVX2-only x86 CPU: every CPUID the process executes (oneDNN in OpenVINO and
 * torch, MLAS in ONNX Runtime, libgcc) reports no AVX-512, AVX-VNNI, AVX512-BF16/FP16 or AMX.
 *
 * Why hand-written: no library masks CPUID at native speed. Emulators (Intel SDE, QEMU's -cpu Haswell)
 * hide the same bits but run the code emulated, so their timings say nothing. Linux's CPUID faulting
 * (arch_prctl ARCH_SET_CPUID, CPU flag cpuid_fault) turns each CPUID into a SIGSEGV that this handler
 * answers with the real result minus the masked bits; everything else runs natively on this core.
 * The setting is inherited by threads and forks and reset by execve, where LD_PRELOAD installs it again.
 *
 * Build: gcc -O2 -shared -fPIC -o cpuid_mask.so cpuid_mask.c   (benchmarks/avx2_only/run does it)
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define ARCH_SET_CPUID 0x1012 /* <asm/prctl.h>, not installed everywhere */

static inline void real_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static void mask(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    if (leaf == 7 && sub == 0) {
        /* EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
        r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) |
                  (1u << 31));
        /* ECX: AVX512_VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
        r[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX_BF16 22, AVX512_FP16 23, AMX_TILE 24, AMX_INT8 25 */
        r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        /* EAX: AVX_VNNI 4, AVX512_BF16 5, AMX_FP16 21, AVX_IFMA 23 */
        r[0] &= ~((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23));
        /* EDX: AVX_VNNI_INT8 4, AVX_NE_CONVERT 5, AMX_COMPLEX 8, AVX10 19 */
        r[3] &= ~((1u << 4) | (1u << 5) | (1u << 8) | (1u << 19));
    } else if (leaf == 0x1d || leaf == 0x1e || leaf == 0x24) {
        r[0] = r[1] = r[2] = r[3] = 0; /* AMX tile and AVX10 descriptions */
    }
}

/* CPUIDs answered: printed at exit when CPUID_MASK_STATS is set, to show that none runs per
 * inference (each costs a signal, a few microseconds, which would bias the timings). */
static volatile unsigned long answered;

static void on_sigsegv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = (ucontext_t *)context;
    greg_t *regs = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)regs[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real crash: let it crash as usual */
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)regs[REG_RAX], sub = (uint32_t)regs[REG_RCX], r[4];
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    real_cpuid(leaf, sub, r);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    mask(leaf, sub, r);
    regs[REG_RAX] = r[0];
    regs[REG_RBX] = r[1];
    regs[REG_RCX] = r[2];
    regs[REG_RDX] = r[3];
    regs[REG_RIP] += 2;
    __atomic_add_fetch(&answered, 1, __ATOMIC_RELAXED);
    (void)sig;
    (void)info;
}

static void report(void) { fprintf(stderr, "cpuid_mask: %lu CPUID instructions answered\n", answered); }

__attribute__((constructor(101))) static void install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigsegv;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, NULL) != 0 || syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        fprintf(stderr, "cpuid_mask: this kernel or CPU cannot fault on CPUID (no cpuid_fault flag): "
                        "run on a machine whose /proc/cpuinfo lists cpuid_fault\n");
        _exit(2);
    }
    if (getenv("CPUID_MASK_STATS")) atexit(report);
}
