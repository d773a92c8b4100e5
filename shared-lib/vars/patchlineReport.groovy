// Ends the run: the worker's report stage (which always runs, whatever
// failed before), then the run's JUnit XML and JSON summary into the
// workspace for the junit and archiveArtifacts steps, and the series'
// counts into the build's description.
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
    String summary = patchlineApi(path: "/runs/${opts.run}").content
    writeFile(file: opts.summaryFile, text: summary)
    String series = seriesLine(readJSON(text: summary))
    currentBuild.description = currentBuild.description ? "${currentBuild.description}<br>${series}" : series
    echo "patchline: series of run ${opts.run}: ${series}"
    if (!(view.state in ['ok', 'skipped'])) {
        error "patchline: report ${view.state}: ${view.error ?: 'see the log above'}"
    }
    return view
}

// "3 applied, 1 failed, 1 held": the counts the worker's apply and collect
// summaries hold.
String seriesLine(def run) {
    Map apply = summaryOf(run, 'apply')
    Map collect = summaryOf(run, 'collect')
    return "${apply.series_applied ?: 0} applied, ${apply.series_failed ?: 0} failed, " +
        "${collect.series_incomplete ?: 0} held"
}

// A stage's summary, empty when the stage has none (JSON null).
Map summaryOf(def run, String stage) {
    def summary = run.stages.find { s -> s.stage == stage }?.summary
    return summary instanceof Map ? summary : [:]
}
