/*
 * submit.c - the submission protocol's payloads (see submit.h).
 */
#include <event2/buffer.h>

#include "lib/ipc.h"
#include "lib/util.h"
#include "proto/submit.h"

int
submit_begin_encode(struct evbuffer *out, const struct envelope *env)
{
	struct evbuffer *text = evbuffer_new();
	int rc = 0;

	if (text == NULL)
		util_assert_fail("evbuffer_new", __FILE__, __LINE__);
	envelope_serialize(env, text);
	/* Bounded by max_recipients in practice; never send a frame the
	 * queue must refuse. */
	if (evbuffer_get_length(text) > IPC_MAX_PAYLOAD)
		rc = -1;
	else
		evbuffer_add_buffer(out, text);
	evbuffer_free(text);
	return rc;
}

int
submit_begin_decode(const void *p, size_t len, size_t max_rcpts,
    struct envelope *env, char *err, size_t errsize)
{
	if (envelope_parse(env, p, len, max_rcpts, err, errsize) == -1)
		return -1;
	if (env->id[0] != '\0') {
		envelope_clear(env);
		snprintf(err, errsize, "envelope carries a queue id");
		return -1;
	}
	return 0;
}

int
submit_qid_decode(const void *p, size_t len, char id[QUEUE_ID_LEN + 1])
{
	const unsigned char *s = p;

	if (len != QUEUE_ID_LEN)
		return -1;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F') ||
		    (s[i] >= 'a' && s[i] <= 'f')))
			return -1;
	memcpy(id, s, len);
	id[len] = '\0';
	return 0;
}

int
submit_reply_decode(const void *p, size_t len, char reply[SUBMIT_REPLY_MAX])
{
	const unsigned char *s = p;

	/* It must look like a failure reply: 4xx/5xx, printable. */
	if (len < 4 || len >= SUBMIT_REPLY_MAX || (s[0] != '4' && s[0] != '5'))
		return -1;
	for (size_t i = 0; i < len; i++)
		if (s[i] < 32 || s[i] > 126)
			return -1;
	memcpy(reply, s, len);
	reply[len] = '\0';
	return 0;
}
