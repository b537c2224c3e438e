package main

import (
	"os"
	"runtime/pprof"
)

// SLUICE_CPUPROFILE=FILE writes a CPU profile of the whole run to FILE, for
// the benchmarks under bench/ (go tool pprof sluice FILE).
func init() {
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
	profileStop = make(chan struct{})
	profileDone = make(chan struct{})
)

// stopProfile flushes the CPU profile, if one is being written.
func stopProfile() {
	close(profileStop)
	<-profileDone
}
