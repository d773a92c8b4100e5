#include <stdio.h>

int main(void)
{
    printf("hello from patchline's demo package\n");
    return 0;
}
