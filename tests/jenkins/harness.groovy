// Runs a declarative Jenkinsfile and the shared library's vars/*.groovy
// without a Jenkins server (none can be installed on these machines):
// plays the part JenkinsPipelineUnit would. The pipeline DSL is a set of
// closures run with delegates that record what they declare; steps are
// closures in the scripts' binding. HTTP goes to the real worker.
//
// groovy harness.groovy --jenkinsfile F --lib DIR --workspace DIR
//   --url URL --token-file F --cause user|timer [--build N]
//   [--param NAME=VALUE]... --transcript OUT.json
// Exit status 0 when the build result is SUCCESS, 1 otherwise.

import groovy.json.JsonOutput
import groovy.json.JsonSlurper

class PipelineError extends RuntimeException {
    PipelineError(String message) { super(message) }
}

// A var of the shared library: callable as a step, and its other
// methods callable as var.method(...), as in Jenkins.
class VarStep extends Closure {
    Script script
    VarStep(Script script) { super(script); this.script = script }
    Object doCall(Object[] args) { script.invokeMethod('call', args) }
    Object methodMissing(String name, Object args) { script.invokeMethod(name, args) }
}

class CurrentBuild {
    String result = null
    String description = null
    String cause
    String user = 'ada'
    List getBuildCauses(String type) {
        getBuildCauses().findAll { it._class == type }
    }
    List getBuildCauses() {
        cause == 'timer' ?
            [[_class: 'hudson.triggers.TimerTrigger$TimerTriggerCause', shortDescription: 'Started by timer']] :
            [[_class: 'hudson.model.Cause$UserIdCause', shortDescription: "Started by user ${user}".toString(), userId: user]]
    }
    String getCurrentResult() { result ?: 'SUCCESS' }
}

class Spec {
    Map declared = [:]
    def methodMissing(String name, Object args) {
        declared[name] = args.length == 1 ? args[0] : args.toList()
        return [step: name, args: args.toList()]
    }
    def propertyMissing(String name) { name }
}

class ParamsSpec {
    List params = []
    def methodMissing(String name, Object args) { params << ([type: name] + args[0]) }
}

class StageSpec {
    String name
    Closure steps
    void steps(Closure c) { steps = c }
}

class StagesSpec {
    List<StageSpec> stages = []
    void stage(String name, Closure body) {
        StageSpec s = new StageSpec(name: name)
        body.delegate = s
        body.resolveStrategy = Closure.DELEGATE_FIRST
        body()
        stages << s
    }
}

// Explicit conditions only: a catch-all would swallow the steps called
// inside them, which resolve through this delegate.
class PostSpec {
    Map<String, Closure> conditions = [:]
    void always(Closure c) { conditions.always = c }
    void success(Closure c) { conditions.success = c }
    void failure(Closure c) { conditions.failure = c }
    void cleanup(Closure c) { conditions.cleanup = c }
}

class PipelineSpec {
    Map sections = [:]
    StagesSpec stages = new StagesSpec()
    PostSpec post = new PostSpec()
    void agent(Object a) { sections.agent = a }
    private Map declare(String section, Closure body) {
        Spec spec = new Spec()
        body.delegate = spec
        body.resolveStrategy = Closure.DELEGATE_FIRST
        body()
        sections[section] = spec.declared
        spec.declared
    }
    void triggers(Closure c) { declare('triggers', c) }
    void options(Closure c) { declare('options', c) }
    void environment(Closure c) { declare('environment', c) }
    void parameters(Closure c) {
        ParamsSpec spec = new ParamsSpec()
        c.delegate = spec
        c.resolveStrategy = Closure.DELEGATE_FIRST
        c()
        sections.parameters = spec.params
    }
    void stages(Closure c) {
        c.delegate = stages
        c.resolveStrategy = Closure.DELEGATE_FIRST
        c()
    }
    void post(Closure c) {
        c.delegate = post
        c.resolveStrategy = Closure.DELEGATE_FIRST
        c()
    }
}

// ---- arguments
Map opts = [params: [:]]
List rest = args as List
while (rest) {
    String a = rest.remove(0)
    switch (a) {
        case '--param':
            def (k, v) = rest.remove(0).split('=', 2) as List
            opts.params[k] = v
            break
        default:
            opts[a.replaceFirst('^--', '')] = rest.remove(0)
    }
}
for (req in ['jenkinsfile', 'lib', 'workspace', 'url', 'token-file', 'cause', 'transcript']) {
    if (!opts[req]) {
        System.err.println("harness: --${req} is required")
        System.exit(2)
    }
}
File workspace = new File(opts.workspace)
workspace.mkdirs()
String token = new File(opts['token-file']).text.readLines()[0].trim()
Map credentials = ['patchline-api-token': token]
String buildNumber = opts.build ?: '1'

// ---- the build's world
List transcript = []
List console = []
Map env = [
    BUILD_NUMBER: buildNumber,
    JOB_NAME: 'patchline',
    BUILD_URL: "https://jenkins.example.org/job/patchline/${buildNumber}/".toString(),
    WORKSPACE: workspace.path,
    PATCHLINE_URL: opts.url,
    PATCHLINE_POLL_MS: '100',
]
Map params = [:]
CurrentBuild currentBuild = new CurrentBuild(cause: opts.cause)
List secrets = []

Binding binding = new Binding()
binding.setVariable('env', env)
binding.setVariable('params', params)
binding.setVariable('currentBuild', currentBuild)

def mask = { String s -> secrets.inject(s) { acc, secret -> acc.replace(secret, '****') } }
def step = { String name, Closure body -> binding.setVariable(name, body) }

step('echo') { Object msg ->
    String line = mask(msg.toString())
    console << line
    println line
}
step('error') { String msg -> throw new PipelineError(msg) }
// As Jenkins' unstable step: the stage and the build become UNSTABLE
// (never better than a FAILURE already set) and the pipeline goes on.
String stageUnstable = null
step('unstable') { String msg ->
    String line = mask(msg)
    console << "WARNING: ${line}".toString()
    println "WARNING: ${line}"
    stageUnstable = line
    if (currentBuild.result != 'FAILURE') {
        currentBuild.result = 'UNSTABLE'
    }
}
step('sleep') { Object a ->
    Map m = a instanceof Map ? a : [time: a]
    long ms = (m.time as long) * ((m.unit ?: 'SECONDS') == 'MILLISECONDS' ? 1 : 1000)
    transcript << [step: 'sleep', ms: ms]
    Thread.sleep(ms)
}
step('string') { Map m -> [kind: 'string'] + m }
step('withCredentials') { List bindings, Closure body ->
    List vars = []
    bindings.each { b ->
        String secret = credentials[b.credentialsId]
        if (secret == null) {
            throw new PipelineError("withCredentials: no credential ${b.credentialsId}")
        }
        env[b.variable] = secret
        secrets << secret
        vars << b.variable
    }
    transcript << [step: 'withCredentials', ids: bindings.collect { it.credentialsId }]
    try {
        body()
    } finally {
        vars.each { env.remove(it) }
    }
}
step('httpRequest') { Map m ->
    // The http_request plugin's contract: status, content, headers.
    transcript << [step: 'httpRequest', method: m.httpMode ?: 'GET', url: m.url]
    HttpURLConnection c = (HttpURLConnection) new URL(m.url).openConnection()
    c.requestMethod = m.httpMode ?: 'GET'
    (m.customHeaders ?: []).each { h -> c.setRequestProperty(h.name, h.value) }
    if (m.contentType == 'APPLICATION_JSON') {
        c.setRequestProperty('Content-Type', 'application/json')
    }
    if (m.requestBody != null) {
        c.doOutput = true
        c.outputStream.withWriter('UTF-8') { it << m.requestBody }
    }
    int status = c.responseCode
    InputStream stream = status >= 400 ? c.errorStream : c.inputStream
    String content = stream == null ? '' : stream.getText('UTF-8')
    Map headers = c.headerFields.findAll { k, v -> k != null }
    if (!m.validResponseCodes) {
        assert status < 400 : "httpRequest ${m.url}: ${status}"
    }
    [status: status, content: content, headers: headers]
}
step('readJSON') { Map m -> new JsonSlurper().parseText(m.text) }
step('writeJSON') { Map m ->
    assert m.returnText : 'harness: writeJSON only with returnText: true'
    JsonOutput.toJson(m.json)
}
step('writeFile') { Map m ->
    new File(workspace, m.file).setText(m.text, 'UTF-8')
    transcript << [step: 'writeFile', file: m.file]
}
step('junit') { Map m ->
    File f = new File(workspace, m.testResults)
    Map record = [step: 'junit', file: m.testResults, exists: f.exists()]
    if (f.exists()) {
        def xml = new XmlSlurper().parse(f)
        List cases = xml.'**'.findAll { it.name() == 'testcase' }
        record.tests = cases.size()
        record.failures = xml.'**'.findAll { it.name() == 'failure' }.size()
        // What Jenkins' test view shows of each case.
        record.cases = cases.collect { c ->
            String status = c.failure.size() ? 'failed' : (c.skipped.size() ? 'skipped' : 'passed')
            [classname: c.@classname.toString(), name: c.@name.toString(), status: status,
             message: (c.failure.@message.toString() ?: c.skipped.@message.toString()),
             out: c.'system-out'.text()]
        }
        record.properties = xml.testsuite.collect { suite ->
            suite.properties.property.collectEntries { p -> [(p.@name.toString()): p.@value.toString()] }
        }
    } else if (!m.allowEmptyResults) {
        throw new PipelineError("junit: no ${m.testResults}")
    }
    transcript << record
}
step('archiveArtifacts') { Map m ->
    List files = m.artifacts.split(',').collect { it.trim() }.findAll { new File(workspace, it).exists() }
    if (!files && !m.allowEmptyArchive) {
        throw new PipelineError("archiveArtifacts: nothing matches ${m.artifacts}")
    }
    transcript << [step: 'archiveArtifacts', files: files]
}
step('any') { 'any' }

// ---- the shared library: one step per vars/*.groovy
GroovyShell shell = new GroovyShell(binding)
new File(opts.lib, 'vars').listFiles().findAll { it.name.endsWith('.groovy') }.sort().each { f ->
    Script s = shell.parse(f)
    s.binding = binding
    binding.setVariable(f.name - '.groovy', new VarStep(s))
}

// ---- the pipeline
PipelineSpec pipelineSpec = null
binding.setVariable('pipeline', { Closure body ->
    pipelineSpec = new PipelineSpec()
    body.delegate = pipelineSpec
    body.resolveStrategy = Closure.DELEGATE_FIRST
    body()
})
String text = new File(opts.jenkinsfile).text
def library = (text =~ /@Library\('([^']+)'\)\s*_/)
assert library.find() && library.group(1) == 'patchline' : 'the Jenkinsfile must load @Library(\'patchline\')'
// The library is loaded above; the annotation itself is Jenkins syntax.
shell.evaluate(text.replaceFirst(/@Library\('[^']+'\)\s*_/, ''), 'Jenkinsfile')
assert pipelineSpec != null : 'the Jenkinsfile declares no pipeline { }'

(pipelineSpec.sections.parameters ?: []).each { p -> params[p.name] = p.defaultValue }
opts.params.each { k, v -> params[k] = (params[k] instanceof Boolean) ? v.toBoolean() : v }

List stages = []
boolean failed = false
pipelineSpec.stages.stages.each { s ->
    if (failed) {
        println "Stage \"${s.name}\" skipped due to earlier failure(s)"
        stages << [name: s.name, status: 'skipped']
        return
    }
    println "[Pipeline] { (${s.name})"
    try {
        stageUnstable = null
        s.steps.resolveStrategy = Closure.OWNER_FIRST
        s.steps.call()
        stages << (stageUnstable == null ? [name: s.name, status: 'ok'] :
            [name: s.name, status: 'unstable', error: stageUnstable])
    } catch (PipelineError e) {
        println "ERROR: ${mask(e.message)}"
        stages << [name: s.name, status: 'failed', error: mask(e.message)]
        currentBuild.result = 'FAILURE'
        failed = true
    }
}
List posts = []
Map conditions = pipelineSpec.post.conditions
String outcome = [SUCCESS: 'success', UNSTABLE: 'unstable'][currentBuild.currentResult] ?: 'failure'
List order = ['always', outcome, 'cleanup']
order.findAll { conditions[it] }.each { name ->
    println "[Pipeline] post (${name})"
    try {
        conditions[name]()
        posts << [name: name, status: 'ok']
    } catch (PipelineError e) {
        println "ERROR: ${mask(e.message)}"
        posts << [name: name, status: 'failed', error: mask(e.message)]
        currentBuild.result = 'FAILURE'
    }
}
String result = currentBuild.currentResult
println "Finished: ${result}"
new File(opts.transcript).text = JsonOutput.prettyPrint(JsonOutput.toJson([
    result: result,
    description: currentBuild.description,
    run: env.PATCHLINE_RUN,
    params: params,
    sections: pipelineSpec.sections.collectEntries { k, v -> [k, v.toString()] },
    stages: stages,
    posts: posts,
    steps: transcript,
    console: console,
]))
System.exit(result == 'SUCCESS' ? 0 : 1)
