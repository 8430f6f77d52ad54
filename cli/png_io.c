/* png_io.c: not yet written. */
