package coordinator

// Kill stops the coordinator abruptly, as a crash or kill -9 would: no
// leadership transfer, the Raft transport closed under in-flight requests.
// Its data directory survives, so a new Coordinator on it restarts the
// replica. It exists for fault-injection tests and the chaos harness; a
// service stops with Close.
func (c *Coordinator) Kill() error { return c.kill() }
