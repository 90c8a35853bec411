// Package bench holds pdrelay's end-to-end benchmarks: packets per second
// forwarded over veth in the lab's namespaces, pdrelay's AF_XDP plane
// against Linux forwarding measured in the same topology and the same run.
// In-memory benchmarks live beside the code they measure (control/...,
// fib, dataplane); the namespace lab is bench/lab.
package bench
