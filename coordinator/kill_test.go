package coordinator

// kill stops the coordinator abruptly, as a crash or kill -9 would: no
// leadership transfer, the Raft transport closed under in-flight requests.
// Its data directory survives, so a new Coordinator on it restarts the
// replica. Only the fault-injection tests kill a coordinator in process; a
// service stops with Close, and the chaos harness kills the process.
func (c *Coordinator) kill() error {
	c.closeOnce.Do(func() { c.closeErr = c.shutdown(false) })
	return c.closeErr
}
