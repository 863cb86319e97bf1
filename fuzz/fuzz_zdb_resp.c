/*
 * fuzz_zdb_resp.c — the RESP reply parser on arbitrary bytes.  Besides
 * crashes and over-reads (ASan), it checks the parser's contract: a
 * complete reply's length fits the input; any prefix of a complete reply
 * is "incomplete" (0), never an error or a different reply; a bulk's
 * payload lies inside the input.
 */
#include "zdb/zdb.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0, max_bulk;
	char *buf;

	if (size < 1)
		return 0;
	max_bulk = (size_t)(data[0] % 4) * 300;    /* 0, 300, 600, 900 */
	buf = malloc(size - 1 ? size - 1 : 1);     /* exact size: ASan sees over-reads */
	memcpy(buf, data + 1, size - 1);
	size--;
	while (off < size) {
		struct resp_reply r;
		int n = resp_parse(buf + off, size - off, max_bulk, &r);

		if (n <= 0)
			break;
		if ((size_t)n > size - off)
			abort();
		if (r.type == RESP_BULK &&
		    (r.str < buf + off || r.str + r.len > buf + off + (size_t)n))
			abort();
		/* prefixes of a complete reply are incomplete, nothing else */
		for (size_t p = 0; p < (size_t)n; p += 1 + (size_t)n / 16) {
			struct resp_reply q;
			int m = resp_parse(buf + off, p, max_bulk, &q);

			if (m != 0)
				abort();
		}
		off += (size_t)n;
	}
	free(buf);
	return 0;
}
