-- A read: the time (ARGV[1], or the server's) and the record, in one command.
return {now, record()}
