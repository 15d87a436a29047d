#!lua name=sse_relay
-- caddy-sse-relay's durable event log on Redis (history on a redis:// broker):
-- sse_relay_publish appends an event to its channel's stream and announces it
-- on pub/sub in one call, so an event is never logged without being announced
-- nor announced without being logged.
--   FCALL sse_relay_publish 1 sse-relay:{<channel>} <payload> <count> <max-age-ms>
-- KEYS[1] is the stream, whose {hash tag} keeps it on the channel's shard; the
-- announcement goes out on a pub/sub channel of the same name as
-- "<entry id> <payload>". It returns the entry id.
redis.register_function('sse_relay_publish', function(keys, args)
	local count, max_age = tonumber(args[2]), tonumber(args[3])
	local id = redis.call('XADD', keys[1], 'MAXLEN', '~', count, '*', 'd', args[1])
	if max_age > 0 then
		local now = redis.call('TIME')
		local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - max_age
		if oldest > 0 then
			redis.call('XTRIM', keys[1], 'MINID', '~', oldest)
		end
	end
	redis.call('PUBLISH', keys[1], id .. ' ' .. args[1])
	return id
end)
