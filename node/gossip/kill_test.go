package gossip

import "fmt"

// Kill stops without leaving: the others must detect the failure. For
// tests and benchmarks of failure detection.
func (g *Gossip) Kill() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.mu.Unlock()
	g.cancel()
	err := g.ml.Shutdown()
	g.wg.Wait()
	if err != nil {
		return fmt.Errorf("gossip shutdown: %w", err)
	}
	return nil
}
