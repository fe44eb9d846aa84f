-- A new connection per transaction: connect, one point select on sbtest1, disconnect.
-- (sysbench 1.0's own scripts have no reconnect option.) Used by bench/sysbench.sh.
function thread_init()
  drv = sysbench.sql.driver()
end

function event()
  local con = drv:connect()
  con:query("SELECT c FROM sbtest1 WHERE id = " .. sysbench.rand.uniform(1, 100000))
  con:disconnect()
end
