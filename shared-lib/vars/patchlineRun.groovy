// Creates the worker run of this build and remembers its id in
// env.PATCHLINE_RUN for patchlineStage and patchlineReport.
def call(Map args = [:]) {
    Map opts = [repos: '', dryRun: false] + args
    boolean timer = currentBuild.getBuildCauses('hudson.triggers.TimerTrigger$TimerTriggerCause')
    def users = currentBuild.getBuildCauses('hudson.model.Cause$UserIdCause')
    String cause = currentBuild.getBuildCauses().collect { c -> c.shortDescription }.join('; ')
    Map body = [
        trigger: timer ? 'timer' : 'manual',
        cause: cause ?: (timer ? 'timer' : 'Jenkins'),
        jenkins_url: env.BUILD_URL,
        dry_run: opts.dryRun as boolean,
    ]
    if (users) {
        body.started_by = users[0].userId
    }
    List repos = (opts.repos ?: '').tokenize(', ')
    if (repos) {
        body.repos = repos
    }
    def response = patchlineApi(method: 'POST', path: '/runs', body: body)
    if (response.status != 201) {
        error "patchline: cannot create a run: ${patchlineApi.message(response)}"
    }
    String id = readJSON(text: response.content).id.toString()
    env.PATCHLINE_RUN = id
    echo "patchline: run ${id} (${body.trigger}) at ${env.PATCHLINE_URL}/api/v1/runs/${id}"
    return id
}
