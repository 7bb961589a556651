package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
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
	metrics  []string // each replica's metrics (and pprof) address
	cmds     []*exec.Cmd
	exited   []chan error // one per cmd: its Wait's result, once it exits
	logs     []string     // each replica's log file
	clients  []*client.Client
	next     atomic.Uint64
	stopping atomic.Bool
	// onExit is told when a replica exits while the run is on: the run
	// fails with that as its cause.
	onExit func(error)
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

func buildVestad(dir string, tags []string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module to build vestad (or pass -vestad): %w", err)
	}
	bin := filepath.Join(dir, "vestad")
	build := exec.Command("go", append(append([]string{"build"}, tags...), "-o", bin, "./tools/vestad")...)
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
		if bin, err = buildVestad(o.dataDir, o.vestadBuildTags()); err != nil {
			return nil, err
		}
	}
	// One call for every port: each call's listeners close when it
	// returns, so a later call could be given a port an earlier one just
	// released (seen in the QEMU guest: a client dialled a metrics port).
	ports, err := freePorts(3 * o.replicas)
	if err != nil {
		return nil, err
	}
	peerAddrs, clientAddrs, metricsAddrs := ports[:o.replicas], ports[o.replicas:2*o.replicas], ports[2*o.replicas:]
	var peers, clients []string
	for i := range o.replicas {
		peers = append(peers, fmt.Sprintf("%d=%s", i+1, peerAddrs[i]))
		clients = append(clients, fmt.Sprintf("%d=%s", i+1, clientAddrs[i]))
	}
	c := &procCluster{metrics: metricsAddrs, onExit: o.onReplicaExit}
	// Every run is a new cluster, under an ID of its own: a replica left
	// over from another run cannot join it.
	clusterID := fmt.Sprint(1 + rand.Uint32())
	for i := range o.replicas {
		args := []string{
			"-bootstrap", "-cluster-id", clusterID,
			"-id", fmt.Sprint(i + 1), "-peers", strings.Join(peers, ","), "-clients", strings.Join(clients, ","),
			"-client-addr", clientAddrs[i], "-metrics-addr", metricsAddrs[i],
			"-sched", o.sched, "-transport", o.transport,
			"-window", fmt.Sprint(o.window), "-max-batch", fmt.Sprint(o.maxBatch), "-max-batch-bytes", fmt.Sprint(o.maxBatchBytes),
		}
		switch o.log {
		case "mem":
			args = append(args, "-log", "mem")
		case "wal":
			dir, err := freshWALDir(o, i+1)
			if err != nil {
				c.stop()
				return nil, err
			}
			args = append(args, "-data", dir)
		case "pmem":
			path := filepath.Join(o.pmemDir, fmt.Sprintf("vesta-bench-r%d-%d.pmem", i+1, os.Getpid()))
			o.cleanup = append(o.cleanup, path, path+".checkpoints") // vestad's default checkpoint directory
			args = append(args, "-log", "pmem:"+path, "-pmem-size", fmt.Sprint(o.pmemSize))
		}
		switch {
		case o.ckptBytes < 0:
			args = append(args, "-checkpoint-dir", "off")
		case o.ckptBytes > 0:
			args = append(args, "-checkpoint-bytes", fmt.Sprint(o.ckptBytes))
		}
		logPath := filepath.Join(o.dataDir, fmt.Sprintf("vestad-%d.log", i+1))
		logf, err := os.Create(logPath)
		if err != nil {
			c.stop()
			return nil, err
		}
		c.logs = append(c.logs, logPath)
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", o.replicaProcs))
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			c.stop()
			return nil, fmt.Errorf("starting vestad %d: %w", i+1, err)
		}
		c.cmds = append(c.cmds, cmd)
		exited := make(chan error, 1)
		c.exited = append(c.exited, exited)
		go func() {
			err := cmd.Wait()
			logf.Close()
			exited <- err
			if !c.stopping.Load() && c.onExit != nil {
				if err == nil {
					err = errors.New("exit status 0")
				}
				c.onExit(fmt.Errorf("vestad %d exited during the run (%v); its log: %s", i+1, err, logPath))
			}
		}()
	}
	fmt.Fprintf(os.Stderr, "started %d vestad processes (logs in %s, metrics and pprof on %s); waiting for a leader...\n",
		o.replicas, o.dataDir, strings.Join(metricsAddrs, " "))
	for range max(o.clients, 1) {
		cl, err := client.New(clientAddrs, client.Options{Reads: o.readMode})
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
				o.links = linkReport(metricsAddrs[0], o.transport, time.Now().Add(10*time.Second))
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, fmt.Errorf("cluster not serving within 20s: %w%s", err, c.lastErrors())
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
	c.stopping.Store(true)
	for _, cl := range c.clients {
		cl.Close()
	}
	for _, cmd := range c.cmds {
		cmd.Process.Signal(syscall.SIGTERM)
	}
	for i, cmd := range c.cmds {
		select {
		case <-c.exited[i]:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-c.exited[i]
		}
	}
}

// lastErrors is the last error lines of every replica's log, for a run
// that failed: what a user needs to see first.
func (c *procCluster) lastErrors() string {
	var b strings.Builder
	for i, path := range c.logs {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var errLines []string
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "level=ERROR") || strings.Contains(line, `"level":"ERROR"`) ||
				strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "fatal error:") {
				errLines = append(errLines, line)
			}
		}
		if len(errLines) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\nvestad %d (%s), last error lines:", i+1, path)
		for _, l := range errLines[max(0, len(errLines)-5):] {
			if len(l) > 400 {
				l = l[:400] + "..."
			}
			fmt.Fprintf(&b, "\n  %s", l)
		}
	}
	return b.String()
}

// freshWALDir is an empty directory for replica id's WAL: every run
// bootstraps a new cluster, so a directory left by an earlier run with the
// same -data is removed first (it is vesta-bench's own, named wal-rN).
func freshWALDir(o *options, id int) (string, error) {
	dir := filepath.Join(o.dataDir, fmt.Sprintf("wal-r%d", id))
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("-data: removing the earlier run's %s: %w", dir, err)
	}
	return dir, nil
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
