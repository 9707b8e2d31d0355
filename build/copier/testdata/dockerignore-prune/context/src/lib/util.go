src/lib/util.go
