// Ends the run: the worker's report stage (which always runs, whatever
// failed before), then the run's JUnit XML and JSON summary into the
// workspace for the junit and archiveArtifacts steps.
def call(Map args = [:]) {
    Map opts = [
        run: env.PATCHLINE_RUN,
        junitFile: 'patchline-junit.xml',
        summaryFile: 'patchline-run.json',
    ] + args
    if (!opts.run) {
        echo 'patchline: no run was created, nothing to report'
        return null
    }
    def view = patchlineStage(stage: 'report', run: opts.run, failOnError: false)
    writeFile(file: opts.junitFile, text: patchlineApi(path: "/runs/${opts.run}/junit.xml").content)
    writeFile(file: opts.summaryFile, text: patchlineApi(path: "/runs/${opts.run}").content)
    if (!(view.state in ['ok', 'skipped'])) {
        error "patchline: report ${view.state}: ${view.error ?: 'see the log above'}"
    }
    return view
}
