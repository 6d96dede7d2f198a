FROM nasiko-test-busybox:1
ADD http://127.0.0.1:9101/services /x
