package main

import (
	"os"
	"runtime"
	"runtime/pprof"
)

// SLUICE_CPUPROFILE=FILE writes a CPU profile of the whole run to FILE,
// and SLUICE_MEMPROFILE=FILE a profile of its allocations when it ends,
// for the benchmarks under bench/ (go tool pprof sluice FILE).
func init() {
	memFile = os.Getenv("SLUICE_MEMPROFILE")
	if memFile != "" {
		runtime.MemProfileRate = 4096 // finer than the default, for the per-connection path
	}
	file := os.Getenv("SLUICE_CPUPROFILE")
	if file == "" {
		close(profileDone)
		return
	}
	f, err := os.Create(file)
	if err != nil || pprof.StartCPUProfile(f) != nil {
		close(profileDone)
		return
	}
	go func() {
		<-profileStop
		pprof.StopCPUProfile()
		f.Close()
		close(profileDone)
	}()
}

var (
	memFile     string
	profileStop = make(chan struct{})
	profileDone = make(chan struct{})
)

// stopProfile flushes the CPU profile, if one is being written, and
// writes the allocation profile, if one was asked for.
func stopProfile() {
	close(profileStop)
	<-profileDone
	if memFile == "" {
		return
	}
	if f, err := os.Create(memFile); err == nil {
		_ = pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
}
