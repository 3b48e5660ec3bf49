--[[
mxgate.lua - an rspamd rule that turns mxgate's authentication verdict into
a symbol, so that rspamd's score includes it instead of mxgate keeping a
second, competing spam score (issue 13, docs/postmaster-guide.md "Content
inspection").

mxgate sends every message to rspamd's /checkv2 with two request headers:
  X-Mxgate-Auth:        "spf=fail dkim=none dmarc=fail score=7.0 action=quarantine"
  X-Mxgate-Auth-Score:  "7.00"   (mxgate's [spam] weights, summed)
and, with [rspamd] skip_auth_checks = yes, disables rspamd's own SPF/DKIM/
DMARC (group "policies") for the request: mxgate already judged them at
ingress, on the real client address.

Install (Debian 12's rspamd 3.4; the same on later versions): copy this file
to /etc/rspamd/mxgate.lua (the Debian package ships it as
/usr/share/doc/mxgate/mxgate.lua) and add one line to
/etc/rspamd/rspamd.local.lua (create it if missing; neither file belongs to
the rspamd package, so upgrades leave both alone, and other local rules can
sit in the same file):

  dofile(rspamd_paths["LOCAL_CONFDIR"] .. "/mxgate.lua")

(If the legacy /etc/rspamd/lua/rspamd.local.lua exists, put the line there
instead: rspamd reads that file only while rspamd.local.lua does not exist.)
Then `rspamadm configtest && systemctl reload rspamd`.  rspamd loads Lua
rules only through /usr/share/rspamd/rules/rspamd.lua, which runs
$LOCAL_CONFDIR/rspamd.local.lua (or, only when that file does not exist,
the legacy lua/rspamd.local.lua) and local.d/rspamd.lua - there is no
lua.local.d folder: a rule copied there is never loaded, MXGATE_AUTH never
fires, and with skip_auth_checks = yes nobody counts SPF/DKIM/DMARC.  mxgate
logs a warning (once) when rspamd's answer to a message with a non-zero
authentication score lacks MXGATE_AUTH.  Check by hand:
`rspamc -h 127.0.0.1:11333 --header 'X-Mxgate-Auth-Score: 5' < some.eml`
lists MXGATE_AUTH(5.00).  Weight: MXGATE_AUTH scores mxgate's score times
the symbol weight (1.0 here; change it in local.d/groups.conf or the web UI).
--]]

rspamd_config:register_symbol{
  name = 'MXGATE_AUTH',
  score = 1.0,
  group = 'mxgate',
  description = 'Authentication score computed by mxgate at ingress (SPF, DKIM, DMARC, DNSBL)',
  callback = function(task)
    local h = task:get_request_header('X-Mxgate-Auth-Score')
    if not h then return false end
    local s = tonumber(tostring(h))
    if not s or s == 0 then return false end
    local summary = task:get_request_header('X-Mxgate-Auth')
    task:insert_result('MXGATE_AUTH', s, summary and tostring(summary) or tostring(h))
  end
}
