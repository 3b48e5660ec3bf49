"""mxgate verdicts -> Amazon WorkMail junk folder (issue 13).

A synchronous "Run Lambda" inbound rule of a WorkMail organisation calls
lambda_handler(event, context) for each incoming message.  The function
fetches the message's raw content (workmailmessageflow
GetRawMessageContent), reads mxgate's verdict headers and answers
WorkMail's message flow contract:

    {"actions": [{"action": {"type": "MOVE_TO_JUNK"}, "allRecipients": true}]}

MOVE_TO_JUNK      mxgate flagged the message as spam (X-Spam-Flag: YES), or
                  let a blocked attachment through (X-Mxgate-Attachments: blocked)
BYPASS_SPAM_CHECK mxgate judged it, every content filter it runs checked it,
                  and it did not flag it (only with BYPASS_ON_CLEAN=yes, the
                  default: one spam verdict, mxgate's)
DEFAULT           no trustworthy and complete mxgate verdict: WorkMail decides

"Complete": X-Spam-Flag: NO alone is not a clean verdict.  With rspamd down
and [rspamd] on_failure = accept, mxgate delivers with its own X-Spam-Flag:
NO plus "X-Spam-Checker: unchecked; reason=..."; with clamd down and
[clamav] on_failure = accept (or a message over max_size) it writes
"X-Virus-Scan: unscanned; ..."; with virus_action = deliver,
"X-Virus-Scan: infected; ...".  Bypassing WorkMail's filter for those would
let mail no content filter checked skip the only one left, so they get
DEFAULT (an infected message even when flagged as spam: WorkMail's own
virus handling decides).  Likewise the attachment policy: any
"X-Mxgate-Attachments" field is a message whose attachments mxgate did not
pass - "unchecked; reason=size|unparsable|setup" (too large, MIME it could
not read): DEFAULT; "blocked; verdict=..." ([attachments] action = tag or
deliver let a blocked attachment through): MOVE_TO_JUNK.  A clean message
carries no such field.  A message the postmaster released from mxgate's
quarantine (X-Mxgate-Released) was held, not judged clean: DEFAULT unless
flagged (then Junk).  Nor is a message rspamd judged spam that mxgate
delivered unflagged because [rspamd] reject_action / tag_action = deliver
(monitoring): X-Spam-Flag: NO, but X-Spam-Status names rspamd's action
("reject", "add header", ...): DEFAULT.  mxgate removes every incoming X-Spam-*, X-Virus-Scan
and X-Mxgate-* field at ingress, so below mxgate's topmost
Authentication-Results these fields are its own.

The headers are trusted only when they are mxgate's: the topmost
Authentication-Results field (mxgate prepends its own and removes any that
carries its authserv-id from incoming mail) must carry MXGATE_AUTHSERV_ID -
once the fields of the hops between mxgate and WorkMail are set aside: SES
inbound (inbound-smtp.<region>.amazonaws.com) prepends its own
"Authentication-Results: amazonses.com; ..." above mxgate's, so taking the
very first field answered DEFAULT for every message.  Each id listed in
DOWNSTREAM_AUTHSERV_IDS is set aside at most once, and only at the top (one
field per hop), so a second "amazonses.com" field written by a sender still
makes the verdict untrusted.  A message that did not pass through mxgate, or
one whose topmost A-R (below the downstream hops') is someone else's, gets
DEFAULT - a sender cannot move its own mail out of junk by writing the
headers.

Environment:
  MXGATE_AUTHSERV_ID   mxgate's [auth] authserv_id (default: its hostname) - required
  DOWNSTREAM_AUTHSERV_IDS  authserv-ids of the hops after mxgate, comma-separated
                       (default amazonses.com: SES inbound in front of WorkMail)
  SPAM_FLAG_HEADER     mxgate's [spam] spam_flag_header (default X-Spam-Flag)
  SPAM_STATUS_HEADER   mxgate's [spam] spam_status_header (default X-Spam-Status)
  BYPASS_ON_CLEAN      yes|no (default yes)
  WORKMAIL_ENDPOINT_URL  only for tests: the message flow API on loopback
"""

import email.parser
import email.policy
import logging
import os
import re

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)

HEADER_LIMIT = 256 * 1024  # the header block is all we read


def _client():
    import boto3  # in the Lambda runtime
    kw = {}
    if os.environ.get("WORKMAIL_ENDPOINT_URL"):
        kw["endpoint_url"] = os.environ["WORKMAIL_ENDPOINT_URL"]
    return boto3.client("workmailmessageflow", **kw)


def header_block(raw):
    """The message's header block (bytes up to the first empty line)."""
    raw = raw[:HEADER_LIMIT]
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = raw.find(sep)
        if i >= 0:
            return raw[:i + len(sep)]
    return raw


def authserv_id(value):
    """The authserv-id of an Authentication-Results value (RFC 8601 2.2):
    the first token, before ';' or a version number; comments dropped."""
    v = re.sub(r"\([^()]*\)", " ", value).strip()
    m = re.match(r"([^\s;]+)", v)
    return m.group(1).lower() if m else ""


# rspamd actions that are not a spam verdict (mxgate delivers them unflagged)
HAM_ACTIONS = ("no action", "greylist")


def verdict(raw, authserv, flag_header="X-Spam-Flag", bypass_on_clean=True,
            downstream=("amazonses.com",), status_header="X-Spam-Status"):
    """(action type, reason) for a raw message."""
    msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
        header_block(raw))
    ars = msg.get_all("Authentication-Results") or []
    ids = [authserv_id(str(a).replace("\r", "").replace("\n", " ")) for a in ars]
    # the downstream hops' own fields sit above mxgate's: one each, at the top
    hops = [d.strip().lower() for d in downstream if d.strip()]
    while ids and ids[0] in hops:
        hops.remove(ids.pop(0))
    if not ids:
        return "DEFAULT", "no Authentication-Results of mxgate"
    top = ids[0]
    if top != authserv.lower():
        return "DEFAULT", f"topmost Authentication-Results is {top!r}, not mxgate's"
    flag = msg.get(flag_header)
    if flag is None:
        return "DEFAULT", f"no {flag_header}"
    flag = str(flag).strip().upper()
    virus = [first_word(v) for v in msg.get_all("X-Virus-Scan") or []]
    if "infected" in virus:
        return "DEFAULT", "X-Virus-Scan: infected"
    if flag.startswith("YES"):
        return "MOVE_TO_JUNK", f"{flag_header}: YES"
    attach = [first_word(v) for v in msg.get_all("X-Mxgate-Attachments") or []]
    if "blocked" in attach:
        return "MOVE_TO_JUNK", "X-Mxgate-Attachments: blocked (let through by its action)"
    for v in attach:
        if v != "clean":
            return "DEFAULT", f"X-Mxgate-Attachments: {v} (attachments not judged)"
    for v in msg.get_all("X-Spam-Checker") or []:
        if first_word(v) == "unchecked":
            return "DEFAULT", "X-Spam-Checker: unchecked (spam filter not run)"
    for v in virus:
        if v != "clean":
            return "DEFAULT", f"X-Virus-Scan: {v} (not virus-checked)"
    if msg.get("X-Mxgate-Released") is not None:
        return "DEFAULT", "released from quarantine"
    for v in msg.get_all(status_header) or []:
        v = str(v).replace("\r", "").replace("\n", " ")
        m = re.search(r'\baction="([^"]*)"', v)
        if "scanner=rspamd" in v and m and m.group(1).lower() not in HAM_ACTIONS:
            return "DEFAULT", f"rspamd action {m.group(1)!r} delivered unflagged"
    if flag.startswith("NO") and bypass_on_clean:
        return "BYPASS_SPAM_CHECK", f"{flag_header}: NO"
    return "DEFAULT", f"{flag_header}: {flag}"


def first_word(value):
    """"unscanned; reason=size; ..." -> "unscanned" (lower case)."""
    v = str(value).replace("\r", "").replace("\n", " ").strip()
    return re.split(r"[\s;]", v, maxsplit=1)[0].lower() if v else ""


def response(action):
    return {"actions": [{"action": {"type": action}, "allRecipients": True}]}


def lambda_handler(event, context):
    message_id = event["messageId"]
    authserv = os.environ["MXGATE_AUTHSERV_ID"]
    flag_header = os.environ.get("SPAM_FLAG_HEADER", "X-Spam-Flag")
    status_header = os.environ.get("SPAM_STATUS_HEADER", "X-Spam-Status")
    bypass = os.environ.get("BYPASS_ON_CLEAN", "yes").lower() in ("yes", "true", "1")
    downstream = os.environ.get("DOWNSTREAM_AUTHSERV_IDS", "amazonses.com").split(",")
    try:
        body = _client().get_raw_message_content(messageId=message_id)["messageContent"]
        raw = body.read(HEADER_LIMIT)
    except Exception as e:  # never hold up mail: WorkMail decides
        LOG.warning("message=%s error=%r action=DEFAULT", message_id, e)
        return response("DEFAULT")
    action, why = verdict(raw, authserv, flag_header, bypass, downstream, status_header)
    LOG.info("message=%s subject=%r action=%s reason=%r", message_id,
             event.get("subject", ""), action, why)
    return response(action)
