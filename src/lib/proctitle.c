/*
 * proctitle.c - the process title (see proctitle.h).
 */
#include <stdarg.h>
#include <sys/prctl.h>

#include "lib/proctitle.h"
#include "lib/util.h"

extern char **environ;

static char *area;        /* argv[0] .. the end of the last string */
static size_t area_len;
static char **saved_argv; /* the arguments, moved out of the area */

void
proctitle_init(int argc, char **argv)
{
	char *start, *end, **env;
	size_t n;

	if (argc < 1 || argv[0] == NULL || area != NULL)
		return;
	/* The strings the kernel laid out one after another: argv, then
	 * the environment; stop at the first that is not contiguous. */
	start = argv[0];
	end = argv[0] + strlen(argv[0]) + 1;
	for (int i = 1; i < argc; i++)
		if (argv[i] == end)
			end = argv[i] + strlen(argv[i]) + 1;
	for (n = 0; environ[n] != NULL; n++)
		;
	env = xcalloc(n + 1, sizeof(*env));
	for (size_t i = 0; i < n; i++) {
		if (environ[i] == end)
			end = environ[i] + strlen(environ[i]) + 1;
		env[i] = xstrdup(environ[i]);
	}
	environ = env;
	/* argv[] too: the caller goes on parsing it (getopt, -c FILE). */
	saved_argv = xcalloc((size_t)argc + 1, sizeof(*saved_argv));
	for (int i = 0; i < argc; i++)
		argv[i] = saved_argv[i] = xstrdup(argv[i]);
	area = start;
	area_len = (size_t)(end - start);
}

void
proctitle_set(const char *fmt, ...)
{
	char title[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(title, sizeof(title), fmt, ap);
	va_end(ap);
	(void)prctl(PR_SET_NAME, title, 0, 0, 0);   /* cut to 15 octets */
	if (area == NULL || area_len < 2)
		return;
	/* The whole area zeroed after the title: its last octet stays NUL,
	 * so /proc/PID/cmdline ends there (and ps shows only the title). */
	memset(area, 0, area_len);
	util_strlcpy(area, title, area_len);
}
