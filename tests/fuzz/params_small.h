/*
 * Forced into every object of the small-buffer fuzzing build
 * (-include): params.h first, then smaller read and reply buffers, so
 * that inputs of a few kilobytes cross the chunk and buffer boundaries
 * of the mbox scanner and the sender.  params.h's include guard keeps
 * these values.  Lower bounds: FILE_CHUNK + SCAN_HEAD (64) must hold a
 * journal header block (4096, maildrop.c), and OUTBUF_SIZE a status
 * line (512) and twice maildrop.c's SEND_PIECE (OUTBUF_SIZE / 4).
 */
#include "../../params.h"

#undef FILE_CHUNK
#define FILE_CHUNK	4096
#undef OUTBUF_SIZE
#define OUTBUF_SIZE	4096
