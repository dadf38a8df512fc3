package logsink

import "errors"

func openPGStore(o Options) (store, error) { return nil, errors.New("logsink: postgres not built yet") }
