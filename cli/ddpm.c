/* ddpm.c: the command-line tool; not yet written. */
int main (void) { return 1; }
