module example.invalid/sessiongate/tools/acceptor

go 1.22
