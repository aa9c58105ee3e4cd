// CoreDNS for the local node's cluster DNS (hack/localnode.py): CoreDNS's own main with only
// the plugins the node's Corefile uses, so the cold build stays small. No forward (or loop,
// which guards forwarding): the node has no route off the machine, so it answers the
// cluster's zones only. The directive order is CoreDNS's own (core/dnsserver/zdirectives.go).
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
