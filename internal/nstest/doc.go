// Package nstest holds the network-namespace helpers that the dataplane's
// root-only tests share: creating namespaces that are deleted when the
// test ends, running code inside one, veth pairs, and reading back what
// ip(8) shows. It is imported only by _test files.
//
// Test namespaces are named <prefix><pid>-<random>-<role>, the prefix
// naming the test package (say "xsk-"). A package's TestMain calls
// SweepStale with that prefix to remove the namespaces of test binaries
// that died before their cleanup ran.
package nstest
