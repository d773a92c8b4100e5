// Runs one pipeline stage on the worker: start it, stream its log into
// the console while it runs (polling with backoff), then fail the Jenkins
// stage when the worker says the stage failed and stopped, or mark it
// unstable when it failed but ran to its end (the worker's `continues`:
// the next stages work on what did succeed). The worker decides; this
// step only follows what it says.
def call(Map args) {
    Map opts = [
        stage: null,
        run: env.PATCHLINE_RUN,
        pollMs: (env.PATCHLINE_POLL_MS ?: '2000') as long,
        maxPollMs: 30000L,
        failOnError: true,
    ] + args
    if (!opts.stage || !opts.run) {
        error 'patchlineStage: needs stage: and a run (call patchlineRun first)'
    }
    String path = "/runs/${opts.run}/stages/${opts.stage}"
    def started = patchlineApi(method: 'POST', path: path)
    if (started.status != 202) {
        error "patchline: cannot start ${opts.stage}: ${patchlineApi.message(started)}"
    }
    long offset = 0
    long delay = opts.pollMs
    while (true) {
        def chunk = patchlineApi(path: "${path}/log?offset=${offset}")
        if (chunk.status != 200) {
            error "patchline: cannot read the ${opts.stage} log: ${patchlineApi.message(chunk)}"
        }
        String state = patchlineApi.header(chunk, 'X-Stage-State')
        if (chunk.content) {
            echo chunk.content.replaceAll(/\n$/, '')
            offset = patchlineApi.header(chunk, 'X-Next-Offset') as long
            delay = opts.pollMs
        } else if (state in ['queued', 'running']) {
            sleep(time: delay, unit: 'MILLISECONDS')
            delay = Math.min(delay * 2, opts.maxPollMs as long)
        } else {
            break
        }
    }
    def view = readJSON(text: patchlineApi(path: path).content)
    echo "patchline: ${opts.stage} of run ${opts.run}: ${view.state}"
    if (opts.failOnError && !(view.state in ['ok', 'skipped'])) {
        String why = "patchline: ${opts.stage} ${view.state}: ${view.error ?: 'see the log above'}"
        if (view.continues) {
            unstable(why)
        } else {
            error why
        }
    }
    return view
}
