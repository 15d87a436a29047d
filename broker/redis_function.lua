#!lua name=sse_relay
-- caddy-sse-relay's durable event log on Redis (history on a redis:// or
-- redis-cluster:// broker): each function appends an event to its channel's
-- stream and announces it on pub/sub in one call, so an event is never logged
-- without being announced nor announced without being logged.
--   FCALL sse_relay_publish 1 sse-relay:{<channel>} <payload> <count> <max-age-ms>
--   FCALL sse_relay_spublish 1 sse-relay:{<channel>} <payload> <count> <max-age-ms>
-- KEYS[1] is the stream, whose {hash tag} keeps it on the channel's shard; the
-- announcement goes out on a pub/sub channel of the same name as
-- "<entry id> <payload>": with PUBLISH (sse_relay_publish, one Redis) or with
-- SPUBLISH (sse_relay_spublish, a Redis Cluster's sharded pub/sub, on the shard
-- that holds the stream). Each returns the entry id.
-- The stream keeps the newest <count> entries, none older than <max-age-ms>
-- (0: no age limit). What it trims, it trims exactly, and the newest id it
-- trimmed is kept in "<stream>:trimmed" (same slot), so that a reader can
-- tell a cursor older than what the stream holds from one that is not.
local function append(keys, args)
	local stream = keys[1]
	local count, max_age = tonumber(args[2]), tonumber(args[3])
	local id = redis.call('XADD', stream, '*', 'd', args[1])
	local gone
	local over = redis.call('XLEN', stream) - count
	if over > 0 then
		local old = redis.call('XRANGE', stream, '-', '+', 'COUNT', over)
		gone = old[#old][1]
		redis.call('XTRIM', stream, 'MAXLEN', count)
	end
	if max_age > 0 then
		local now = redis.call('TIME')
		local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - max_age
		if oldest > 0 then
			local old = redis.call('XREVRANGE', stream, '(' .. oldest .. '-0', '-', 'COUNT', 1)
			if #old > 0 then
				gone = old[1][1]
				redis.call('XTRIM', stream, 'MINID', oldest)
			end
		end
	end
	if gone then
		redis.call('SET', stream .. ':trimmed', gone)
	end
	return id
end

redis.register_function('sse_relay_publish', function(keys, args)
	local id = append(keys, args)
	redis.call('PUBLISH', keys[1], id .. ' ' .. args[1])
	return id
end)

redis.register_function('sse_relay_spublish', function(keys, args)
	local id = append(keys, args)
	redis.call('SPUBLISH', keys[1], id .. ' ' .. args[1])
	return id
end)
