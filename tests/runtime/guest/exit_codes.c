/* EXIT_HOW 0: main returns EXIT_VALUE; 1: hart EXIT_HART calls rt_exit(EXIT_VALUE) inside a team. */
#include "tinyodl_rt.h"

#ifndef EXIT_HOW
#define EXIT_HOW 0
#endif
#ifndef EXIT_VALUE
#define EXIT_VALUE 0
#endif
#ifndef EXIT_HART
#define EXIT_HART 2
#endif

static void team_body(void *arg)
{
    (void)arg;
    if (rt_core_id() == EXIT_HART) {
        rt_puts("hart ");
        rt_print_int(rt_core_id());
        rt_puts(" exits\n");
        rt_exit(EXIT_VALUE);
    }
    rt_barrier();
}

int main(void)
{
    if (EXIT_HOW == 1)
        rt_team_run(team_body, 0);
    rt_puts("mismatch in tensor w0: max error 1.5e-3\n");
    return EXIT_VALUE;
}
