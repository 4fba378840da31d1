module github.com/pushgate/pushgate

go 1.25
