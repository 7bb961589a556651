package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vestalabs/vesta/bench"
	"github.com/vestalabs/vesta/client"
)

// procCluster is vestad replicas running as separate processes on
// 127.0.0.1, driven through the client library.
type procCluster struct {
	metrics []string // each replica's metrics (and pprof) address
	cmds    []*exec.Cmd
	clients []*client.Client
	next    atomic.Uint64
}

func freePorts(n int) ([]string, error) {
	var addrs []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

func buildVestad(dir string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module to build vestad (or pass -vestad): %w", err)
	}
	bin := filepath.Join(dir, "vestad")
	build := exec.Command("go", "build", "-o", bin, "./tools/vestad")
	build.Dir = strings.TrimSpace(string(out))
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("building vestad: %w", err)
	}
	return bin, nil
}

func startProcesses(o *options) (*procCluster, error) {
	bin := o.vestad
	if bin == "" {
		fmt.Fprintln(os.Stderr, "building vestad...")
		var err error
		if bin, err = buildVestad(o.dataDir); err != nil {
			return nil, err
		}
	}
	peerAddrs, err := freePorts(o.replicas)
	if err != nil {
		return nil, err
	}
	clientAddrs, err := freePorts(o.replicas)
	if err != nil {
		return nil, err
	}
	metricsAddrs, err := freePorts(o.replicas)
	if err != nil {
		return nil, err
	}
	var peers, clients []string
	for i := range o.replicas {
		peers = append(peers, fmt.Sprintf("%d=%s", i+1, peerAddrs[i]))
		clients = append(clients, fmt.Sprintf("%d=%s", i+1, clientAddrs[i]))
	}
	c := &procCluster{metrics: metricsAddrs}
	for i := range o.replicas {
		args := []string{
			"-id", fmt.Sprint(i + 1), "-peers", strings.Join(peers, ","), "-clients", strings.Join(clients, ","),
			"-client-addr", clientAddrs[i], "-metrics-addr", metricsAddrs[i],
			"-sched", o.sched,
			"-window", fmt.Sprint(o.window), "-max-batch", fmt.Sprint(o.maxBatch), "-max-batch-bytes", fmt.Sprint(o.maxBatchBytes),
		}
		switch o.log {
		case "mem":
			args = append(args, "-log", "mem")
		case "wal":
			args = append(args, "-data", filepath.Join(o.dataDir, fmt.Sprintf("r%d", i+1)))
		case "pmem":
			path := filepath.Join(o.pmemDir, fmt.Sprintf("vesta-bench-r%d-%d.pmem", i+1, os.Getpid()))
			o.cleanup = append(o.cleanup, path)
			args = append(args, "-log", "pmem:"+path, "-pmem-size", fmt.Sprint(o.pmemSize))
		}
		logf, err := os.Create(filepath.Join(o.dataDir, fmt.Sprintf("vestad-%d.log", i+1)))
		if err != nil {
			c.stop()
			return nil, err
		}
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", o.replicaProcs))
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			c.stop()
			return nil, fmt.Errorf("starting vestad %d: %w", i+1, err)
		}
		c.cmds = append(c.cmds, cmd)
	}
	fmt.Fprintf(os.Stderr, "started %d vestad processes (logs in %s, metrics and pprof on %s); waiting for a leader...\n",
		o.replicas, o.dataDir, strings.Join(metricsAddrs, " "))
	for range max(o.clients, 1) {
		cl, err := client.New(clientAddrs, client.Options{})
		if err != nil {
			c.stop()
			return nil, err
		}
		c.clients = append(c.clients, cl)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := c.clients[0].Put(ctx, []byte("vesta-bench-probe"), []byte("1"))
		cancel()
		if err == nil {
			// A quorum serves; wait for every replica to answer too (one
			// that prefaults a large log starts later), so that the load
			// meets the whole cluster and replica 1 reports its log.
			if err = c.waitAllServing(clientAddrs, deadline, o); err == nil {
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, fmt.Errorf("cluster not serving within 20s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitAllServing waits until every replica answers a status request, until
// deadline; replica 1's answer gives o.durability.
func (c *procCluster) waitAllServing(addrs []string, deadline time.Time, o *options) error {
	for i, addr := range addrs {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := c.clients[0].Status(ctx, addr)
			cancel()
			if err == nil {
				if i == 0 {
					o.durability = st.Durability
				}
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("replica %d (%s) not answering: %w", i+1, addr, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// Submit implements bench.Target through the client's asynchronous calls,
// spread round robin over the clients: no goroutine, context or timer per
// operation. done runs on the client's connection reader.
func (c *procCluster) Submit(op bench.Op, done func(error)) {
	cl := c.clients[c.next.Add(1)%uint64(len(c.clients))]
	if op.Write {
		cl.PutAsync(op.Key, op.Value, done)
		return
	}
	cl.GetAsync(op.Key, func(_ []byte, _ bool, err error) { done(err) })
}

func (c *procCluster) stop() {
	for _, cl := range c.clients {
		cl.Close()
	}
	var errs []error
	for _, cmd := range c.cmds {
		cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, cmd := range c.cmds {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			errs = append(errs, <-done)
		}
	}
	_ = errors.Join(errs...)
}

// profile fetches a CPU profile of every replica over the next d, into dir.
func (c *procCluster) profile(dir string, d time.Duration) {
	var wg sync.WaitGroup
	for i, addr := range c.metrics {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(d.Seconds()))
			resp, err := http.Get(url)
			if err != nil {
				fmt.Fprintf(os.Stderr, "profile of replica %d: %v\n", i+1, err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("vestad-%d.pprof", i+1)))
			if err != nil {
				return
			}
			defer f.Close()
			io.Copy(f, resp.Body)
		}()
	}
	wg.Wait()
}
