/*
 * config_value.c - the syntax of option values (names, domains, numbers
 * with units, addresses, networks, maildir patterns, paths), and the small
 * helpers every part of the loader uses: growing arrays, a string
 * buffer, values quoted for messages, "did you mean" (see config_int.h).
 */
#include <arpa/inet.h>

#include "conf/config_int.h"
#include "lib/util.h"

/*
 * Small helpers: growing arrays and strings
 */

/* Make room for element n of an array grown one at a time: the capacity
 * is the power of two at or above n, so reallocate when n is one. */
void *
config_grow(void *arr, size_t n, size_t size)
{
	if (n == 0 || (n & (n - 1)) == 0)
		arr = xreallocarray(arr, n == 0 ? 1 : 2 * n, size);
	return arr;
}


void
config_sbuf_vaddf(struct config_sbuf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	ASSERT(n >= 0);
	if (b->len + (size_t)n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->len + (size_t)n + 1)
			cap *= 2;
		b->s = xreallocarray(b->s, cap, 1);
		b->cap = cap;
	}
	vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
	b->len += (size_t)n;
}

void
config_sbuf_addf(struct config_sbuf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	config_sbuf_vaddf(b, fmt, ap);
	va_end(ap);
}

/* A value quoted for a message; non-printable bytes as \xNN, long values
 * cut, so a binary file cannot garble the report. */
const char *
config_show(char buf[96], const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (o + 8 > 96) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (c < 0x20 || c >= 0x7f) {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		} else {
			buf[o++] = (char)c;
		}
	}
	buf[o] = '\0';
	return buf;
}

/* Levenshtein distance, for "did you mean"; names are short. */
static size_t
edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64];

	if (la >= nitems(row) || lb >= nitems(row))
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* The closest of names (count n, stride bytes apart) to word, if close
 * enough to be a plausible typo; NULL otherwise. */
const char *
config_suggest(const char *word, const char *const *names, size_t n,
    size_t stride)
{
	const char *best = NULL;
	size_t bestd = SIZE_MAX, limit = strlen(word) / 3;

	if (limit < 1)
		limit = 1;
	if (limit > 3)
		limit = 3;
	for (size_t i = 0; i < n; i++) {
		const char *name = *(const char *const *)(const void *)
		    ((const char *)names + i * stride);
		size_t d = edit_distance(word, name);

		if (d <= limit && d < bestd) {
			best = name;
			bestd = d;
		}
	}
	return best;
}

/*
 * Value checks
 */

static bool
is_atext(int c)
{
	/* RFC 5321 4.1.2 atext, ASCII only (names in files are ASCII). */
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* NULL if (s, len) is a valid mailbox name, else why not. */
const char *
config_check_local(const char *s, size_t len)
{
	if (len == 0)
		return "empty name";
	if (len > CONFIG_LOCAL_MAX)
		return "longer than 64 characters (RFC 5321 4.5.3.1.1)";
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '@')
			return "contains '@'";
		if (s[i] == '/')
			return "contains '/' (names are used in Maildir paths)";
		if (s[i] == '.') {
			if (i == 0 || i == len - 1 || s[i - 1] == '.')
				return "has a leading, trailing or double '.'";
			continue;
		}
		if (!is_atext((unsigned char)s[i]))
			return "contains a character not allowed in a "
			       "dot-string (RFC 5321 4.1.2)";
	}
	return NULL;
}

/* NULL if (s, len) is a valid LDH domain name, else why not. */
const char *
config_check_domain(const char *s, size_t len)
{
	size_t label = 0;

	if (len == 0)
		return "empty name";
	if (len > CONFIG_HOSTNAME_MAX)
		return "longer than 253 characters";
	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? s[i] : '.';

		if (c == '.') {
			if (label == 0)
				return "has an empty label";
			if (s[i - 1] == '-')
				return "has a label ending in '-'";
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-'))
			return "may only contain letters, digits, '-' and '.'";
		if (c == '-' && label == 0)
			return "has a label starting with '-'";
		if (++label > CONFIG_LABEL_MAX)
			return "has a label longer than 63 characters";
	}
	return NULL;
}

bool
config_parse_digits(const char *s, size_t len, uint64_t *v)
{
	uint64_t x = 0;

	if (len == 0 || len > 20)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (x > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return false;
		x = x * 10 + (uint64_t)(s[i] - '0');
	}
	*v = x;
	return true;
}

/* A number with an optional one-letter unit from units (multipliers in
 * mult, same order); false if malformed or overflowing. */
static bool
parse_scaled(const char *s, const char *units, const uint64_t *mult,
    uint64_t *v)
{
	size_t len = strlen(s);
	uint64_t m = 1, x;
	const char *u;

	if (len > 1 && (u = strchr(units, s[len - 1])) != NULL) {
		m = mult[u - units];
		len--;
	}
	if (!config_parse_digits(s, len, &x) || (x != 0 && m > UINT64_MAX / x))
		return false;
	*v = x * m;
	return true;
}

static const char size_units[] = "KkMmGg";
static const uint64_t size_mult[] = { KIB, KIB, KIB * KIB, KIB * KIB,
	KIB * KIB * KIB, KIB * KIB * KIB };
static const char duration_units[] = "smhd";
static const uint64_t duration_mult[] = { 1, 60, 3600, 86400 };

bool
config_parse_number(enum config_opt_type type, const char *s, uint64_t *v)
{
	if (type == T_SIZE)
		return parse_scaled(s, size_units, size_mult, v);
	if (type == T_DURATION)
		return parse_scaled(s, duration_units, duration_mult, v);
	return config_parse_digits(s, strlen(s), v);
}

/* Bounds and defaults printed the way a person would write them. */
static void
fmt_size(char *buf, size_t size, uint64_t v)
{
	static const char suffix[] = "GMK";
	static const uint64_t div[] = { KIB * KIB * KIB, KIB * KIB, KIB };

	for (size_t i = 0; i < nitems(div); i++) {
		if (v != 0 && v % div[i] == 0) {
			snprintf(buf, size, "%llu%c",
			    (unsigned long long)(v / div[i]), suffix[i]);
			return;
		}
	}
	snprintf(buf, size, "%llu", (unsigned long long)v);
}

static void
fmt_duration(char *buf, size_t size, uint64_t v)
{
	static const char suffix[] = "dhm";
	static const uint64_t div[] = { 86400, 3600, 60 };

	for (size_t i = 0; i < nitems(div); i++) {
		if (v != 0 && v % div[i] == 0) {
			snprintf(buf, size, "%llu%c",
			    (unsigned long long)(v / div[i]), suffix[i]);
			return;
		}
	}
	snprintf(buf, size, "%llus", (unsigned long long)v);
}

void
config_fmt_bound(const struct config_option *o, char *buf, size_t size,
    uint64_t v)
{
	if (o->type == T_SIZE)
		fmt_size(buf, size, v);
	else if (o->type == T_DURATION)
		fmt_duration(buf, size, v);
	else
		snprintf(buf, size, "%llu", (unsigned long long)v);
}

bool
config_parse_listen(const char *s, struct sockaddr_storage *ss,
    socklen_t *slen)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *hs;
	size_t hlen;
	uint64_t port;
	int family;

	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL || close[1] != ':')
			return false;
		hs = s + 1;
		hlen = (size_t)(close - hs);
		colon = close + 1;
		family = AF_INET6;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return false;
		hs = s;
		hlen = (size_t)(colon - s);
		if (memchr(hs, ':', hlen) != NULL)
			return false;   /* IPv6 needs brackets */
		family = AF_INET;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return false;
	memcpy(host, hs, hlen);
	host[hlen] = '\0';
	if (!config_parse_digits(colon + 1, strlen(colon + 1), &port) ||
	    port == 0 || port > 65535)
		return false;
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return false;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*slen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return false;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*slen = sizeof(*sin6);
	}
	return true;
}

bool
config_parse_cidr(const char *s, struct config_cidr *c)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t hlen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	unsigned bits;
	uint64_t prefix;

	if (hlen == 0 || hlen >= sizeof(host))
		return false;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	memset(c, 0, sizeof(*c));
	if (strchr(host, ':') != NULL) {
		if (inet_pton(AF_INET6, host, c->addr) != 1)
			return false;
		c->family = AF_INET6;
		bits = 128;
	} else {
		if (inet_pton(AF_INET, host, c->addr) != 1)
			return false;
		c->family = AF_INET;
		bits = 32;
	}
	prefix = bits;
	if (slash != NULL && (!config_parse_digits(slash + 1, strlen(slash + 1),
	    &prefix) || prefix > bits || strlen(slash + 1) > 3))
		return false;
	c->prefix = (unsigned)prefix;
	/* Keep only the network part, so matching compares whole bytes. */
	for (unsigned i = 0; i < bits / 8; i++) {
		unsigned lo = i * 8;

		if (lo >= c->prefix)
			c->addr[i] = 0;
		else if (lo + 8 > c->prefix)
			c->addr[i] &= (uint8_t)(0xff00u >> (c->prefix - lo));
	}
	return true;
}

/* NULL if the maildir pattern is well formed, else why not. */
const char *
config_check_maildir(const char *pat, char *why, size_t whysize)
{
	bool has_user = false;

	for (const char *s = pat; *s != '\0'; s++) {
		if (*s != '%')
			continue;
		s++;
		if (*s == 'u')
			has_user = true;
		else if (*s == '\0')
			return "the pattern ends with a lone '%'";
		else if (*s != 'd' && *s != '%') {
			char c[96];

			snprintf(why, whysize, "unknown escape '%%%s' (use %%d, "
			    "%%u or %%%%)", config_show(c, s, 1));
			return why;
		}
	}
	if (!has_user)
		return "the pattern must contain %u (the mailbox name)";
	return NULL;
}

bool
config_is_space(char c)
{
	return c == ' ' || c == '\t';
}

void
config_trim(const char **s, size_t *len)
{
	while (*len > 0 && config_is_space(**s)) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && config_is_space((*s)[*len - 1]))
		(*len)--;
}

char *
config_lower_dup(const char *s, size_t len)
{
	char *r = xstrndup(s, len);

	util_ascii_lower(r);
	return r;
}

/*
 * Paths
 */

/*
 * Join cwd and path and normalise "." and ".." lexically; NULL if the
 * result would exceed CONFIG_PATH_MAX. ".." is taken lexically (the parent
 * of the name, not of a symlink's target), which is what "SPOOL/../empty"
 * means in the documentation.
 */
char *
config_path_absolute(const char *cwd, const char *path)
{
	char out[CONFIG_PATH_MAX + 1];
	size_t o = 0;
	const char *parts[2] = { path[0] == '/' ? "" : cwd, path };

	for (size_t k = 0; k < 2; k++) {
		const char *s = parts[k];

		while (*s != '\0') {
			const char *e;
			size_t n;

			while (*s == '/')
				s++;
			e = s;
			while (*e != '\0' && *e != '/')
				e++;
			n = (size_t)(e - s);
			if (n == 0 || (n == 1 && s[0] == '.')) {
				/* nothing */
			} else if (n == 2 && s[0] == '.' && s[1] == '.') {
				while (o > 0 && out[o - 1] != '/')
					o--;
				if (o > 0)
					o--;  /* the slash */
			} else {
				if (o + 1 + n > CONFIG_PATH_MAX)
					return NULL;
				out[o++] = '/';
				memcpy(out + o, s, n);
				o += n;
			}
			s = e;
		}
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = '\0';
	return xstrdup(out);
}

char *
config_path_parent(const char *abs)
{
	const char *slash = strrchr(abs, '/');

	if (slash == NULL || slash == abs)
		return xstrdup("/");
	return xstrndup(abs, (size_t)(slash - abs));
}

char *
config_default_submit_socket(const char *spool_dir)
{
	char *parent = config_path_parent(spool_dir);
	char *path = xasprintf("%s%ssubmit.sock", parent,
	    strcmp(parent, "/") == 0 ? "" : "/");

	free(parent);
	return path;
}
