// Package deploy holds what a machine needs to run medmesh: deps.txt, the
// Debian packages `make deps` installs, and (in deploy/lab) the campus lab.
// Its test checks that every program the code executes is in deps.txt.
package deploy
