/*
 * passwd.c - `tern passwd USER [FILE] [-c CONF]` (see passwd.h).
 *
 * The password is read twice from the terminal with echo off, or once
 * from standard input when that is not a terminal (scripts). The hash is
 * yescrypt ("$y$", crypt_gensalt_rn's default cost). The file is replaced
 * atomically: a temporary file next to it is written, fsync'ed and
 * renamed over it, and the directory fsync'ed; its mode and owner are
 * kept (a new file is 0600). The line's addresses field stays as it was.
 */
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "conf/config.h"
#include "conf/passwd.h"
#include "mail/sasl.h"
#include "lib/util.h"

#define PASSWD_FILE_MAX (64u << 20)

/* One line from fd into buf (without its newline); -1 on EOF before any
 * byte, on error, or when the line is longer than size - 1. */
static int
read_line_fd(int fd, char *buf, size_t size)
{
	size_t n = 0;
	bool too_long = false;

	for (;;) {
		char c;
		ssize_t r = read(fd, &c, 1);

		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (n == 0 && !too_long)
				return -1;
			break;
		}
		if (c == '\n')
			break;
		if (n + 1 < size)
			buf[n++] = c;
		else
			too_long = true;
	}
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	return too_long ? -1 : 0;
}

static int
prompt(int fd, const char *what, char *buf, size_t size)
{
	struct termios old, quiet;
	int r;

	fprintf(stderr, "%s", what);
	fflush(stderr);
	if (tcgetattr(fd, &old) == -1)
		return -1;
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	quiet.c_lflag |= ECHONL;
	if (tcsetattr(fd, TCSAFLUSH, &quiet) == -1)
		return -1;
	r = read_line_fd(fd, buf, size);
	(void)tcsetattr(fd, TCSAFLUSH, &old);
	return r;
}

/* The new password into buf; -1 after saying why not. */
static int
get_password(char *buf, size_t size)
{
	char again[SASL_FIELD_MAX + 2];

	if (isatty(STDIN_FILENO)) {
		if (prompt(STDIN_FILENO, "New password: ", buf, size) == -1 ||
		    prompt(STDIN_FILENO, "Again: ", again, sizeof(again)) == -1) {
			fprintf(stderr, "tern passwd: no password read\n");
			return -1;
		}
		if (strcmp(buf, again) != 0) {
			explicit_bzero(again, sizeof(again));
			fprintf(stderr, "tern passwd: the passwords differ\n");
			return -1;
		}
		explicit_bzero(again, sizeof(again));
	} else if (read_line_fd(STDIN_FILENO, buf, size) == -1) {
		fprintf(stderr, "tern passwd: no password on standard input "
		    "(or longer than %d bytes)\n", SASL_FIELD_MAX);
		return -1;
	}
	if (buf[0] == '\0' || strlen(buf) > SASL_FIELD_MAX) {
		fprintf(stderr, "tern passwd: the password must be 1..%d "
		    "bytes\n", SASL_FIELD_MAX);
		return -1;
	}
	return 0;
}

char *
passwd_update_text(const char *old, size_t oldlen, const char *user,
    const char *hash)
{
	size_t ulen = strlen(user), cap = oldlen + ulen + strlen(hash) + 8;
	char *out, *o;
	bool done = false;

	/* The text is a C string from here on: a NUL byte would cut it, and
	 * every line after it would be lost. */
	if (old != NULL && memchr(old, '\0', oldlen) != NULL)
		return NULL;
	out = o = xmalloc(cap);
	for (size_t i = 0; old != NULL && i < oldlen;) {
		const char *line = old + i, *nl = memchr(line, '\n', oldlen - i);
		size_t len = nl ? (size_t)(nl - line) : oldlen - i;
		const char *c1, *c2, *name = line;
		size_t skip = 0;

		i += len + (nl != NULL);
		/* The loader trims blanks around a line (config_files.c):
		 * " alice:..." is alice's line for it, so it is for us. */
		while (skip < len && (name[skip] == ' ' || name[skip] == '\t'))
			skip++;
		name += skip;
		c1 = memchr(name, ':', len - skip);
		if (!done && c1 != NULL && (size_t)(c1 - name) == ulen &&
		    memcmp(name, user, ulen) == 0) {
			/* user:hash[:addresses]: keep ":addresses" */
			c2 = memchr(c1 + 1, ':', len - skip - ulen - 1);
			o += snprintf(o, cap - (size_t)(o - out), "%s:%s", user,
			    hash);
			if (c2 != NULL) {
				size_t rest = (size_t)(line + len - c2);

				memcpy(o, c2, rest);
				o += rest;
			}
			*o++ = '\n';
			done = true;
			continue;
		}
		memcpy(o, line, len);
		o += len;
		*o++ = '\n';
	}
	if (!done)
		o += snprintf(o, cap - (size_t)(o - out), "%s:%s\n", user, hash);
	*o = '\0';
	return out;
}

/* Write text to path atomically, keeping the mode and owner of the old
 * file (st, or 0600 and ours if there was none). */
static int
replace_file(const char *path, const char *text, const struct stat *st)
{
	char *tmp = xasprintf("%s.tmp.XXXXXX", path), *dir, *slash;
	int fd = mkstemp(tmp), rc = -1;

	if (fd == -1) {
		fprintf(stderr, "tern passwd: cannot create %s: %s\n", tmp,
		    strerror(errno));
		free(tmp);
		return -1;
	}
	if (fchmod(fd, st != NULL ? st->st_mode & 07777 : 0600) == -1 ||
	    (st != NULL && fchown(fd, st->st_uid, st->st_gid) == -1 &&
	    errno != EPERM) ||
	    util_write_all(fd, text, strlen(text)) == -1 || fsync(fd) == -1) {
		fprintf(stderr, "tern passwd: cannot write %s: %s\n", tmp,
		    strerror(errno));
		close(fd);
		unlink(tmp);
		free(tmp);
		return -1;
	}
	close(fd);
	if (rename(tmp, path) == -1) {
		fprintf(stderr, "tern passwd: cannot rename %s to %s: %s\n", tmp,
		    path, strerror(errno));
		unlink(tmp);
		free(tmp);
		return -1;
	}
	dir = xstrdup(path);
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash != NULL)
		*slash = '\0';
	/* The rename happened: the change is made, durable or not. */
	rc = 0;
	if (util_fsync_dir_at(AT_FDCWD, slash != NULL ? dir : ".") == -1)
		fprintf(stderr, "tern passwd: warning: cannot fsync the "
		    "directory of %s: %s\n", path, strerror(errno));
	free(dir);
	free(tmp);
	return rc;
}

/* Read the whole old file, if any. 1: read, 0: does not exist, -1. */
static int
read_old(const char *path, char **text, size_t *len, struct stat *st)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	size_t cap = 4096, n = 0;
	char *buf;

	if (fd == -1)
		return errno == ENOENT ? 0 : -1;
	if (fstat(fd, st) == -1 || !S_ISREG(st->st_mode)) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	buf = xmalloc(cap);
	for (;;) {
		ssize_t r = read(fd, buf + n, cap - n);

		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			free(buf);
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n == cap) {
			if (cap >= PASSWD_FILE_MAX) {
				free(buf);
				close(fd);
				errno = EFBIG;
				return -1;
			}
			cap *= 2;
			buf = xreallocarray(buf, cap, 1);
		}
	}
	close(fd);
	*text = buf;
	*len = n;
	return 1;
}

bool
passwd_user_valid(const char *u)
{
	size_t n = strlen(u);

	/* '#' first would make the line a comment to the loader. */
	if (n == 0 || n > SASL_FIELD_MAX || u[0] == '#')
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)u[i] <= ' ' || u[i] == ':' || u[i] == 0x7f)
			return false;
	return true;
}

int
passwd_main(int argc, char **argv)
{
	const char *user = NULL, *file = NULL, *conf = NULL;
	char pass[SASL_FIELD_MAX + 2], setting[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *cd;
	struct config *cfg = NULL;
	struct stat st;
	char *old = NULL, *text, *hash;
	size_t oldlen = 0;
	int r, rc = 1;

	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			conf = argv[++i];
		else if (argv[i][0] == '-' || (user != NULL && file != NULL))
			user = NULL, file = NULL, i = argc;
		else if (user == NULL)
			user = argv[i];
		else
			file = argv[i];
	}
	if (user == NULL) {
		fprintf(stderr, "usage: tern passwd USER [FILE] [-c CONF]\n");
		return 64;
	}
	if (!passwd_user_valid(user)) {
		fprintf(stderr, "tern passwd: '%s': a user name is 1..%d bytes "
		    "without blanks, control characters or ':', not starting "
		    "with '#'\n", user, SASL_FIELD_MAX);
		return 64;
	}
	if (file == NULL) {
		char *errors = NULL;

		cfg = config_load(conf, &errors);
		if (cfg == NULL) {
			fputs(errors ? errors : "configuration error\n", stderr);
			free(errors);
			return 78;
		}
		free(errors);
		if (cfg->passwd_file == NULL) {
			fprintf(stderr, "tern passwd: no FILE given and %s has no "
			    "passwd_file\n", cfg->source);
			config_free(&cfg);
			return 64;
		}
		file = cfg->passwd_file;
	}
	if ((r = read_old(file, &old, &oldlen, &st)) == -1) {
		fprintf(stderr, "tern passwd: cannot read %s: %s\n", file,
		    strerror(errno));
		goto out;
	}
	if (r == 1 && memchr(old, '\0', oldlen) != NULL) {
		fprintf(stderr, "tern passwd: %s holds a NUL byte: not a "
		    "passwd file\n", file);
		goto out;
	}
	if (get_password(pass, sizeof(pass)) == -1)
		goto out;
	cd = xcalloc(1, sizeof(*cd));
	if (crypt_gensalt_rn("$y$", 0, NULL, 0, setting, sizeof(setting)) ==
	    NULL || (hash = crypt_rn(pass, setting, cd, sizeof(*cd))) == NULL ||
	    hash[0] == '*') {
		fprintf(stderr, "tern passwd: cannot hash: %s\n", strerror(errno));
		explicit_bzero(cd, sizeof(*cd));
		free(cd);
		goto out;
	}
	text = passwd_update_text(old, oldlen, user, hash);
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	if (replace_file(file, text, r == 1 ? &st : NULL) == 0) {
		printf("tern passwd: password of %s set in %s; restart tern "
		    "to use it\n", user, file);
		rc = 0;
	}
	free(text);
out:
	explicit_bzero(pass, sizeof(pass));
	free(old);
	config_free(&cfg);
	return rc;
}
