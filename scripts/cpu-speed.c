/* How fast this machine really is, for reading BENCHMARKS.md: a dependent add loop (one
 * cycle per iteration on any modern core) and a 25-case switch taken in a fixed cycle (an
 * indirect jump a normal branch predictor learns). Build and run:
 *   gcc -O2 scripts/cpu-speed.c -o /tmp/cpu-speed && /tmp/cpu-speed */
#include <stdio.h>
#include <time.h>

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(void) {
    const long adds = 1000000000L;
    unsigned long sum = 1;
    double start = now_ns();
    for (long i = 0; i < adds; i++) {
        sum += i;
        __asm__ volatile("" : "+r"(sum));
    }
    printf("dependent add: %.2f ns per iteration (%lu)\n", (now_ns() - start) / adds, sum);

    const int cases = 25, rounds = 2000000;
    unsigned char order[25];
    for (int i = 0; i < cases; i++) order[i] = i + 1;
    unsigned long s = 0;
    start = now_ns();
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < cases; i++) {
            switch (order[i]) {
            case 1: s += 1; break;   case 2: s ^= 2; break;   case 3: s += 3; break;
            case 4: s ^= 4; break;   case 5: s += 5; break;   case 6: s ^= 6; break;
            case 7: s += 7; break;   case 8: s ^= 8; break;   case 9: s += 9; break;
            case 10: s ^= 10; break; case 11: s += 11; break; case 12: s ^= 12; break;
            case 13: s += 13; break; case 14: s ^= 14; break; case 15: s += 15; break;
            case 16: s ^= 16; break; case 17: s += 17; break; case 18: s ^= 18; break;
            case 19: s += 19; break; case 20: s ^= 20; break; case 21: s += 21; break;
            case 22: s ^= 22; break; case 23: s += 23; break; case 24: s ^= 24; break;
            case 25: s += 25; break;
            }
        }
    }
    printf("switch dispatch: %.2f ns per jump (%lu)\n",
           (now_ns() - start) / ((double)rounds * cases), s);
    return 0;
}
