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

Install: copy this file to /etc/rspamd/lua.local.d/mxgate.lua (rspamd >= 3
loads that folder), or dofile() it from /etc/rspamd/rspamd.local.lua, and
reload rspamd.  Weight: MXGATE_AUTH scores mxgate's score times the symbol
weight (1.0 here; change it in local.d/groups.conf or the web UI).
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
