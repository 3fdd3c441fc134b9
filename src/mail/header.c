/*
 * header.c - RFC 5322 header fields in raw message text (see header.h).
 */
#include <string.h>

#include "lib/util.h"
#include "mail/header.h"

bool
header_field_is(const char *line, size_t n, const char *name)
{
	size_t k = strlen(name);

	if (n <= k || !util_ascii_casecmp_n(line, k, name, k))
		return false;
	while (k < n && (line[k] == ' ' || line[k] == '\t'))
		k++;
	return k < n && line[k] == ':';
}

unsigned
header_count(const char *msg, size_t len, const char *name, unsigned stop)
{
	const char *p = msg, *end = msg + len;
	unsigned count = 0;

	while (p < end && count < stop) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t ll = eol != NULL ? (size_t)(eol - p) : (size_t)(end - p);

		if (ll > 0 && p[ll - 1] == '\r')
			ll--;
		if (ll == 0)
			break;   /* RFC 5322 2.1: the end of the header section */
		if (header_field_is(p, ll, name))
			count++;
		if (eol == NULL)
			break;
		p = eol + 1;
	}
	return count;
}
